"""Fusion-head training pieces: class weights, expert dropout, presence masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sitefusion.config import FusionConfig
from sitefusion.training.fusion_head import expert_dropout_mask, fit_fusion
from sitefusion.training.loop import class_weights


def test_class_weights_powers() -> None:
    y = np.array([0] * 90 + [1] * 10)
    balanced = class_weights(y, 3, power=1.0)
    sqrt = class_weights(y, 3, power=0.5)
    assert balanced[2] == 0 and sqrt[2] == 0  # absent class
    assert balanced[1] / balanced[0] == pytest.approx(9.0)
    assert sqrt[1] / sqrt[0] == pytest.approx(3.0)
    assert float(balanced[:2].mean()) == pytest.approx(1.0)


def test_expert_dropout_never_drops_every_expert() -> None:
    gen = torch.Generator().manual_seed(0)
    mask = expert_dropout_mask(2000, 3, 0.9, gen)
    assert mask.any(1).all()
    assert 0.05 < mask.float().mean() < 0.5


def test_fit_fusion_respects_presence() -> None:
    rng = np.random.default_rng(0)
    n, e, d, k = 120, 3, 6, 2
    y = rng.integers(0, k, n)
    feats = rng.normal(size=(n, e, d)).astype(np.float32)
    feats[:, 0, 0] += 2.0 * y  # expert 0 carries the signal
    logits = rng.normal(size=(n, e, k)).astype(np.float32)
    presence = np.ones((n, e), bool)
    presence[:40, 0] = False
    cfg = FusionConfig(epochs=200, hidden=8)
    model, curve = fit_fusion(
        "average_attention",
        feats,
        logits,
        y,
        cfg=cfg,
        num_classes=k,
        seed=0,
        presence=presence,
    )
    assert curve[-1] < curve[0]
    with torch.inference_mode():
        out = model(
            torch.from_numpy(feats),
            torch.from_numpy(logits),
            torch.from_numpy(presence),
        )
    w = out.weights.numpy()
    assert np.all(w[:40, 0] == 0)
    assert np.allclose(w.sum(1), 1, atol=1e-5)
    acc = (out.logits.argmax(1).numpy() == y)[40:].mean()
    assert acc > 0.8


def test_soup_is_the_mean_of_its_members_with_fresh_batchnorm_statistics() -> None:
    """finetune_soup: each member starts from the same weights and differs by seed; the result
    holds the mean of the members' parameters and BatchNorm statistics of the data, not theirs."""
    import copy

    from sitefusion.experts import SiteExpert
    from sitefusion.fusion import FusedSystem, FusionClassifier
    from sitefusion.training.finetune import finetune_fusion, finetune_soup

    torch.manual_seed(0)
    experts = [
        SiteExpert(backbone="compact", spatial_dims=2, in_channels=1, feature_dim=8, num_classes=2)
        for _ in range(2)
    ]
    system = FusedSystem(experts, FusionClassifier("average_attention", 2, 8, 2, hidden=8))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 32)
    x = (rng.normal(size=(32, 1, 16, 16)) * 3 + 5 + y[:, None, None, None]).astype(np.float32)
    args = (x, y, np.ones((32, 2), bool))
    cfg = FusionConfig(finetune_epochs=2, finetune_lr=1e-2, finetune_soup=2)

    members = []
    for seed in (7, 8):
        member = copy.deepcopy(system)
        finetune_fusion(member, *args, cfg=cfg, num_classes=2, seed=seed, batch_size=8)
        members.append(dict(member.named_parameters()))
    curves = finetune_soup(system, *args, cfg=cfg, num_classes=2, seed=7, batch_size=8)

    assert len(curves) == 2 and all(len(c) == 2 for c in curves)
    assert curves[0] != curves[1]  # the members really differ
    for name, p in system.named_parameters():
        mean = (members[0][name] + members[1][name]) / 2
        assert torch.allclose(p, mean, atol=1e-5), name
    stem = system.experts[0].backbone.bn1  # type: ignore[index]
    conv = system.experts[0].backbone.conv1  # type: ignore[index]
    with torch.no_grad():
        out = conv(torch.from_numpy(x))
    assert torch.allclose(stem.running_mean, out.mean((0, 2, 3)), atol=1e-4)
    assert not system.training
