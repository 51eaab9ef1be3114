"""Fusion-head training pieces: class weights, expert dropout, the own-site flag, presence masks."""

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


@pytest.mark.parametrize("home_flag", [False, True])
def test_fit_fusion_respects_presence_and_home(home_flag: bool) -> None:
    rng = np.random.default_rng(0)
    n, e, d, k = 120, 3, 6, 2
    y = rng.integers(0, k, n)
    feats = rng.normal(size=(n, e, d)).astype(np.float32)
    feats[:, 0, 0] += 2.0 * y  # expert 0 carries the signal
    logits = rng.normal(size=(n, e, k)).astype(np.float32)
    presence = np.ones((n, e), bool)
    presence[:40, 0] = False
    home = np.zeros((n, e), bool)
    home[np.arange(n), rng.integers(0, e, n)] = True
    cfg = FusionConfig(epochs=200, hidden=8, use_home_flag=home_flag)
    model, curve = fit_fusion(
        "average_attention",
        feats,
        logits,
        y,
        cfg=cfg,
        num_classes=k,
        seed=0,
        presence=presence,
        home=home,
    )
    assert curve[-1] < curve[0]
    with torch.inference_mode():
        out = model(
            torch.from_numpy(feats),
            torch.from_numpy(logits),
            torch.from_numpy(presence),
            torch.from_numpy(home),
        )
    w = out.weights.numpy()
    assert np.all(w[:40, 0] == 0)
    assert np.allclose(w.sum(1), 1, atol=1e-5)
    acc = (out.logits.argmax(1).numpy() == y)[40:].mean()
    assert acc > 0.8
