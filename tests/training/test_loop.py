"""The shared supervised loop: stochastic weight averaging instead of early stopping."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from sitefusion.config import TrainingConfig
from sitefusion.training.loop import EpochReport, fit_classifier, recompute_batchnorm


def _data(n: int, seed: int, separation: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, 1, 8, 8)) + y[:, None, None, None] * separation).astype(np.float32)
    return x, y


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def _fit(
    cfg: TrainingConfig, snapshots: list[dict[str, torch.Tensor]] | None = None
) -> tuple[nn.Module, list[dict[str, float]], int, np.ndarray]:
    x, y = _data(48, 0)
    xv, yv = _data(16, 1)
    model = _net()

    def on_epoch(_: EpochReport) -> None:
        if snapshots is not None:
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    result = fit_classifier(model, x, y, xv, yv, cfg=cfg, num_classes=2, seed=3, on_epoch=on_epoch)
    return model, result.history, result.best_epoch, x


def test_swa_keeps_the_mean_of_the_last_epochs_weights() -> None:
    cfg = TrainingConfig(epochs=5, batch_size=8, lr=0.05, augment=False, swa_epochs=3)
    snapshots: list[dict[str, torch.Tensor]] = []
    model, _, best_epoch, _ = _fit(cfg, snapshots)
    assert len(snapshots) == 5 and best_epoch == 4
    state = model.state_dict()
    for name in ["0.weight", "0.bias", "1.weight", "5.weight", "5.bias"]:
        expected = torch.stack([s[name] for s in snapshots[2:]]).mean(0)
        assert torch.allclose(state[name], expected, atol=1e-6), name
        # Not merely the last epoch's weights: the epochs did move them.
        assert not torch.allclose(state[name], snapshots[-1][name], atol=1e-6), name


def test_swa_batchnorm_statistics_describe_the_averaged_weights() -> None:
    cfg = TrainingConfig(epochs=4, batch_size=8, lr=0.05, augment=False, swa_epochs=2)
    snapshots: list[dict[str, torch.Tensor]] = []
    model, _, _, x = _fit(cfg, snapshots)
    averaged_stats = torch.stack([s["1.running_mean"] for s in snapshots[2:]]).mean(0)
    got = model.state_dict()["1.running_mean"].clone()
    assert not torch.allclose(got, averaged_stats, atol=1e-4)
    recompute_batchnorm(model, x, 8)
    assert torch.allclose(model.state_dict()["1.running_mean"], got, atol=1e-6)
    assert not model.training


def test_swa_runs_every_epoch_whatever_the_patience() -> None:
    # lr 0 keeps validation flat, so early stopping would end the plain run after `patience`.
    plain = TrainingConfig(epochs=6, batch_size=8, lr=1e-12, augment=False, patience=1)
    _, history, best_epoch, _ = _fit(plain)
    assert len(history) < 6
    swa = TrainingConfig(epochs=6, batch_size=8, lr=1e-12, augment=False, patience=1, swa_epochs=2)
    _, history, best_epoch, _ = _fit(swa)
    assert len(history) == 6 and best_epoch == 5


def test_a_validation_set_missing_a_class_is_scored_without_warnings() -> None:
    """A small site's validation set often lacks a class the network predicts: balanced accuracy
    is then over the classes present, and training logs stay free of scikit-learn warnings."""
    x, y = _data(48, 0)
    xv, _ = _data(16, 1)
    yv = np.zeros(16, dtype=np.int64)  # class 1 absent from validation
    model = _net()
    cfg = TrainingConfig(epochs=2, batch_size=8, lr=0.05, augment=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit_classifier(model, x, y, xv, yv, cfg=cfg, num_classes=2, seed=3)
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(xv)).argmax(1).numpy()
    # The kept epoch's figure is the recall of class 0, the one class present.
    kept = result.history[result.best_epoch]["val_balanced_accuracy"]
    assert 0 < (predicted == 1).sum() < len(predicted)  # the case the warning came from
    assert abs(kept - float((predicted == 0).mean())) < 1e-9


def test_select_by_loss_keeps_the_lowest_validation_loss_epoch() -> None:
    # A weak signal, so validation balanced accuracy and loss disagree on the best epoch.
    x, y = _data(48, 0, separation=0.3)
    xv, yv = _data(16, 1, separation=0.3)
    kept: dict[str, tuple[int, list[dict[str, float]]]] = {}
    for select_by in ("loss", "balanced_accuracy"):
        model = _net()
        snapshots: list[dict[str, torch.Tensor]] = []

        def on_epoch(
            _: EpochReport, m: nn.Module = model, s: list[dict[str, torch.Tensor]] = snapshots
        ) -> None:
            s.append({k: v.detach().clone() for k, v in m.state_dict().items()})

        cfg = TrainingConfig(
            epochs=8, batch_size=8, lr=0.05, augment=False, patience=8, select_by=select_by
        )
        result = fit_classifier(
            model, x, y, xv, yv, cfg=cfg, num_classes=2, seed=3, on_epoch=on_epoch
        )
        kept[select_by] = (result.best_epoch, result.history)
        for name, value in model.state_dict().items():
            assert torch.equal(value, snapshots[result.best_epoch][name]), name
    epoch, history = kept["loss"]
    assert epoch == int(np.argmin([h["val_loss"] for h in history]))
    epoch_ba, history = kept["balanced_accuracy"]
    baccs = [h["val_balanced_accuracy"] for h in history]
    assert baccs[epoch_ba] == max(baccs)
    assert epoch_ba != epoch
