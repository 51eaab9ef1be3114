"""Fusion-head training pieces: class weights, expert dropout, the own-site flag, presence masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sitefusion.config import FusionConfig
from sitefusion.training.fusion_head import expert_dropout_mask, fit_fusion
from sitefusion.training.loop import class_weights, logit_adjustments, site_class_weights


def test_class_weights_powers() -> None:
    y = np.array([0] * 90 + [1] * 10)
    balanced = class_weights(y, 3, power=1.0)
    sqrt = class_weights(y, 3, power=0.5)
    assert balanced[2] == 0 and sqrt[2] == 0  # absent class
    assert balanced[1] / balanced[0] == pytest.approx(9.0)
    assert sqrt[1] / sqrt[0] == pytest.approx(3.0)
    assert float(balanced[:2].mean()) == pytest.approx(1.0)


def test_site_class_weights_give_each_site_and_each_class_within_it_equal_weight() -> None:
    # site "a": 90 of class 0 and 10 of class 1; site "b": 20 of class 2 only.
    y = np.array([0] * 90 + [1] * 10 + [2] * 20)
    site = np.array(["a"] * 100 + ["b"] * 20)
    w = site_class_weights(y, site, 3)
    assert float(w.mean()) == pytest.approx(1.0)
    # By hand: 1 / (sites * classes at the site * images in the cell), then scaled to mean 1.
    raw = np.array([1 / (2 * 2 * 90)] * 90 + [1 / (2 * 2 * 10)] * 10 + [1 / (2 * 1 * 20)] * 20)
    np.testing.assert_allclose(w, raw / raw.mean(), rtol=1e-6)
    assert w[site == "a"].sum() == pytest.approx(w[site == "b"].sum())
    assert w[y == 0].sum() == pytest.approx(w[y == 1].sum())
    sqrt = site_class_weights(y, site, 3, power=0.5)
    assert sqrt[90] / sqrt[0] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="one shape"):
        site_class_weights(y, site[:-1], 3)


def test_logit_adjustments_are_each_sites_floored_log_prior() -> None:
    y = np.array([0, 0, 0, 1, 0, 1])
    site = np.array(["a", "a", "a", "a", "b", "b"])
    off = logit_adjustments(y, site, 3, floor=0.01)
    # site a: 3/4, 1/4, 0 -> class 2 floored at 0.01, then renormalised (sum 1.01)
    np.testing.assert_allclose(np.exp(off[0]), [0.75 / 1.01, 0.25 / 1.01, 0.01 / 1.01], rtol=1e-6)
    np.testing.assert_allclose(np.exp(off[5]), [0.5 / 1.01, 0.5 / 1.01, 0.01 / 1.01], rtol=1e-6)
    assert (off[:4] == off[0]).all() and (off[4:] == off[4]).all()
    pooled = logit_adjustments(y, np.zeros(6), 3, floor=0.01)
    np.testing.assert_allclose(
        np.exp(pooled[0]), [4 / 6 / 1.01, 2 / 6 / 1.01, 0.01 / 1.01], rtol=1e-6
    )
    with pytest.raises(ValueError, match="one shape"):
        logit_adjustments(y, site[:-1], 3)
    with pytest.raises(ValueError, match="floor"):
        logit_adjustments(y, site, 3, floor=0.5)


def test_site_class_balance_changes_what_finetuning_learns() -> None:
    """The rows' own-site flags decide the sites; the weighting must reach the loss."""
    from sitefusion.experts import SiteExpert
    from sitefusion.training.finetune import FusedSystem, finetune_fusion
    from sitefusion.training.fusion_head import FusionClassifier

    rng = np.random.default_rng(0)
    y = np.array([0] * 40 + [1] * 8 + [1] * 8)
    x = (rng.normal(size=(56, 1, 16, 16)) + y[:, None, None, None]).astype(np.float32)
    home = np.zeros((56, 2), bool)
    home[:48, 0] = True
    home[48:, 1] = True
    ends = []
    for balance in ("class", "site_class", "logit_adjust", "site_logit_adjust"):
        torch.manual_seed(0)
        experts = [
            SiteExpert(
                backbone="compact", spatial_dims=2, in_channels=1, feature_dim=8, num_classes=2
            )
            for _ in range(2)
        ]
        system = FusedSystem(experts, FusionClassifier("average_attention", 2, 8, 2, hidden=8))
        cfg = FusionConfig(finetune_epochs=2, finetune_lr=1e-2, finetune_balance=balance)
        curve = finetune_fusion(
            system,
            x,
            y,
            np.ones((56, 2), bool),
            home,
            cfg=cfg,
            num_classes=2,
            seed=0,
            batch_size=16,
        )
        assert all(np.isfinite(curve))
        ends.append(torch.cat([p.detach().flatten() for p in system.parameters()]))
    for i in range(len(ends)):
        for j in range(i):
            assert not torch.allclose(ends[i], ends[j]), (i, j)


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


def _drift_after_finetune(anchor: float) -> float:
    """Squared distance the experts move during 3 epochs of fine-tuning at ``finetune_anchor``."""
    from sitefusion.experts import SiteExpert
    from sitefusion.training.finetune import FusedSystem, finetune_fusion
    from sitefusion.training.fusion_head import FusionClassifier

    torch.manual_seed(0)
    experts = [
        SiteExpert(backbone="compact", spatial_dims=2, in_channels=1, feature_dim=8, num_classes=2)
        for _ in range(2)
    ]
    start = [p.detach().clone() for e in experts for p in e.parameters()]
    head = FusionClassifier("average_attention", 2, 8, 2, hidden=8)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 48)
    x = rng.normal(size=(48, 1, 16, 16)).astype(np.float32) + y[:, None, None, None]
    cfg = FusionConfig(finetune_epochs=3, finetune_lr=1e-2, finetune_anchor=anchor)
    finetune_fusion(
        FusedSystem(experts, head),
        x,
        y,
        np.ones((48, 2), bool),
        np.zeros((48, 2), bool),
        cfg=cfg,
        num_classes=2,
        seed=0,
        batch_size=16,
    )
    end = [p.detach() for e in experts for p in e.parameters()]
    return float(sum(((a - b) ** 2).sum() for a, b in zip(end, start, strict=True)))


def test_finetune_anchor_keeps_experts_closer_to_their_start() -> None:
    free, anchored = _drift_after_finetune(0.0), _drift_after_finetune(10.0)
    assert free > 0
    assert anchored < 0.5 * free


def test_soup_is_the_mean_of_its_members_with_fresh_batchnorm_statistics() -> None:
    """finetune_soup: each member starts from the same weights and differs by seed; the result
    holds the mean of the members' parameters and BatchNorm statistics of the data, not theirs."""
    import copy

    from sitefusion.experts import SiteExpert
    from sitefusion.training.finetune import FusedSystem, finetune_fusion, finetune_soup
    from sitefusion.training.fusion_head import FusionClassifier

    torch.manual_seed(0)
    experts = [
        SiteExpert(backbone="compact", spatial_dims=2, in_channels=1, feature_dim=8, num_classes=2)
        for _ in range(2)
    ]
    system = FusedSystem(experts, FusionClassifier("average_attention", 2, 8, 2, hidden=8))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 32)
    x = (rng.normal(size=(32, 1, 16, 16)) * 3 + 5 + y[:, None, None, None]).astype(np.float32)
    args = (x, y, np.ones((32, 2), bool), np.zeros((32, 2), bool))
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
