from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sitefusion.config import FusionConfig, load_config
from sitefusion.errors import ConfigError
from sitefusion.training.augment import BatchAugmenter


def _channel_spread(batch: np.ndarray) -> np.ndarray:
    """Per image, the largest difference between two channels' means."""
    means = batch.reshape(batch.shape[0], batch.shape[1], -1).mean(-1)
    return means.max(1) - means.min(1)


def test_colour_jitter_moves_channels_apart_and_plain_augmentation_does_not() -> None:
    # A uniform grey image: geometry leaves it unchanged and the plain intensity transforms move
    # every channel together, so only colour jitter can give it a colour cast.
    batch = np.ones((64, 3, 16, 16), np.float32)
    plain = BatchAugmenter(2, seed=0)(batch)
    jittered = BatchAugmenter(2, seed=0, colour_jitter=0.3)(batch)
    assert _channel_spread(plain).max() < 0.05  # Gaussian noise only (std 0.03 per pixel)
    spread = _channel_spread(jittered)
    assert np.median(spread) > 0.1
    assert spread.max() < 2 * 0.3 * 2 + 0.1  # bounded by the scale and shift of strength 0.3


def test_colour_jitter_is_seeded_and_works_in_3d() -> None:
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(4, 2, 8, 8, 8)).astype(np.float32)
    a = BatchAugmenter(3, seed=5, colour_jitter=0.2)(batch)
    b = BatchAugmenter(3, seed=5, colour_jitter=0.2)(batch)
    c = BatchAugmenter(3, seed=6, colour_jitter=0.2)(batch)
    assert a.shape == batch.shape and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_out_of_range_colour_jitter_is_refused(value: float, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="colour_jitter"):
        BatchAugmenter(2, colour_jitter=value)
    p = tmp_path / "c.yaml"
    p.write_text(f"training:\n  colour_jitter: {value}\n")
    with pytest.raises(ConfigError, match=r"training\.colour_jitter"):
        load_config(p)


def test_finetuning_applies_colour_jitter() -> None:
    """The same seed with and without colour jitter ends in different experts: it is wired in."""
    from sitefusion.experts import SiteExpert
    from sitefusion.training.finetune import FusedSystem, finetune_fusion
    from sitefusion.training.fusion_head import FusionClassifier

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 32)
    x = (rng.normal(size=(32, 3, 16, 16)) + y[:, None, None, None]).astype(np.float32)
    ends = []
    for jitter in (0.0, 0.0, 0.3):
        torch.manual_seed(0)
        experts = [
            SiteExpert(
                backbone="compact", spatial_dims=2, in_channels=3, feature_dim=8, num_classes=2
            )
            for _ in range(2)
        ]
        system = FusedSystem(experts, FusionClassifier("average_attention", 2, 8, 2, hidden=8))
        finetune_fusion(
            system,
            x,
            y,
            np.ones((32, 2), bool),
            np.zeros((32, 2), bool),
            cfg=FusionConfig(finetune_epochs=1, finetune_lr=1e-2),
            num_classes=2,
            seed=0,
            batch_size=16,
            colour_jitter=jitter,
        )
        ends.append(torch.cat([p.detach().flatten() for p in system.experts.parameters()]))
    assert torch.equal(ends[0], ends[1])
    assert not torch.allclose(ends[0], ends[2])
