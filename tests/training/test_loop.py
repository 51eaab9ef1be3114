"""The shared supervised loop: stochastic weight averaging instead of early stopping."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from sitefusion.config import TrainingConfig
from sitefusion.training.loop import EpochReport, fit_classifier


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
