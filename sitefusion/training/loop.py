"""Supervised training of one network of the experts' architecture: site experts and the
pooled baseline.

In-memory tensors in, best weights out; class-weighted cross-entropy, AdamW with a cosine
learning-rate schedule and a short warm-up (:func:`~sitefusion.training.schedules.warmup_cosine`),
early stopping on the validation balanced accuracy, and a checkpoint after every epoch so that an
interrupted run resumes where it stopped. The steps themselves are
:func:`sitefusion.training.engine.train_epoch`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.optim.swa_utils import update_bn

from sitefusion.config import TrainingConfig
from sitefusion.rundir import RunDir
from sitefusion.training.augment import BatchAugmenter
from sitefusion.training.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from sitefusion.training.device import resolve_device
from sitefusion.training.engine import Batch, train_epoch
from sitefusion.training.schedules import warmup_cosine

__all__ = [
    "EpochReport",
    "FitResult",
    "class_weights",
    "epoch_steps",
    "fit_classifier",
    "predict_logits",
    "recompute_batchnorm",
]


@dataclass(frozen=True)
class EpochReport:
    """What a progress display needs after each epoch."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_balanced_accuracy: float
    images_per_second: float


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_classifier`."""

    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_epoch: int
    resumed_from: int | None


def class_weights(labels: np.ndarray, num_classes: int, power: float = 0.5) -> torch.Tensor:
    """Inverse-frequency class weights ``(n / count_k) ** power``, mean 1 over present classes.

    ``power=1`` is scikit-learn's "balanced" weighting; the default square root is used because
    full inverse weighting on data that is 94% one class makes the loss dominated by a handful of
    images: training turns unstable and the model over-predicts the rare classes at every site.
    Absent classes get weight 0.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.zeros(num_classes)
    present = counts > 0
    w[present] = (counts[present].sum() / counts[present]) ** power
    w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, x: np.ndarray, batch_size: int = 128, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Logits ``[N, C]`` of ``model`` on images ``x`` ``[N, C_in, *S]`` in eval mode."""
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).to(device)
        outs.append(model(xb).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)


def recompute_batchnorm(model: nn.Module, images: np.ndarray, batch_size: int = 64) -> None:
    """Reset ``model``'s BatchNorm running statistics and re-estimate them over ``images``
    ``[N, C, *S]`` (unaugmented, no gradients) with PyTorch's SWA helper ``update_bn``; the
    model's train/eval mode is left as it was."""
    device = next(model.parameters()).device
    with torch.no_grad():
        update_bn(
            (
                torch.from_numpy(images[i : i + batch_size])
                for i in range(0, len(images), batch_size)
            ),
            model,
            device=device,
        )


def epoch_steps(n_images: int, cfg: TrainingConfig) -> int:
    """Optimizer steps per epoch: one pass over the data, but at least ``min_steps_per_epoch``.

    Small sites get their shuffled data repeated, so an expert on 200 images is not stopped after
    a few dozen updates.
    """
    return max(1, math.ceil(n_images / cfg.batch_size), cfg.min_steps_per_epoch)


def fit_classifier(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    cfg: TrainingConfig,
    num_classes: int,
    seed: int,
    run: RunDir | None = None,
    checkpoint_stem: str | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``model`` (images ``[N, C, *S]`` -> logits ``[N, num_classes]``) and return its best weights.

    Args:
        x_train, y_train: training images and integer labels.
        x_val, y_val: validation images of the same site (early stopping); may be empty, then
            the last epoch is kept.
        cfg: epochs, batch size, learning rate, weight decay, patience, augmentation, weighting.
        seed: fixes data order, augmentation and dropout epoch by epoch, so that a resumed run
            follows the same path as an uninterrupted one.
        run, checkpoint_stem: where per-epoch checkpoints go (``None``: no checkpoints).
        on_epoch, on_batch: progress callbacks.
    """
    device = resolve_device(cfg.device)
    model.to(device)
    weight = class_weights(y_train, num_classes) if cfg.class_weighting else None
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None)
    # The validation loss is computed on the CPU, from numpy logits: its weights stay there.
    val_loss_fn = nn.CrossEntropyLoss(weight=weight)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    spatial_dims = x_train.ndim - 2
    augment = BatchAugmenter(spatial_dims, seed) if cfg.augment else None

    state = TrainingState(epoch=-1, best_epoch=-1, best_score=-math.inf)
    best: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    resumed_from: int | None = None
    if run is not None and checkpoint_stem is not None:
        restored = load_checkpoint(run, checkpoint_stem, model, optimizer)
        if restored is not None:
            state, best = restored
            resumed_from = state.epoch

    n = len(x_train)
    steps = epoch_steps(n, cfg)

    def batches(epoch: int) -> Iterator[Batch]:
        torch.manual_seed(seed * 10007 + epoch)
        rng = np.random.default_rng([seed, epoch])
        if augment is not None:
            augment.reseed(seed * 7919 + epoch)
        repeats = math.ceil(steps * cfg.batch_size / max(1, n))
        order = np.concatenate([rng.permutation(n) for _ in range(repeats)])
        for step in range(steps):
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            xb = augment(x_train[idx]) if augment is not None else torch.from_numpy(x_train[idx])
            yield Batch((xb,), torch.from_numpy(y_train[idx]).long(), step)

    for epoch in range(state.epoch + 1, cfg.epochs):
        if state.stopped:
            break
        t0 = time.perf_counter()

        def rates(step: int, epoch: int = epoch) -> list[float]:
            return [warmup_cosine(cfg.lr, epoch, step, steps, cfg.epochs)]

        result = train_epoch(
            model,
            optimizer,
            loss_fn,
            batches(epoch),
            learning_rates=rates,
            on_batch=on_batch,
            device=device,
            precision=cfg.precision,
        )
        elapsed = time.perf_counter() - t0
        train_loss, seen = result.mean, result.seen

        if len(x_val):
            logits = predict_logits(model, x_val, device=device)
            val_loss = float(
                val_loss_fn(torch.from_numpy(logits), torch.from_numpy(y_val).long()).item()
            )
            with warnings.catch_warnings():
                # A small site's validation set lacks some classes the network predicts: its
                # balanced accuracy is over the classes present, as intended; no need to warn
                # at every epoch.
                warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
                val_bacc = float(balanced_accuracy_score(y_val, logits.argmax(1)))
        else:
            val_loss, val_bacc = float("nan"), float("nan")
        # Balanced accuracy first; the loss breaks ties (tiny validation sets tie often).
        score = (val_bacc if not math.isnan(val_bacc) else 0.0) - 1e-3 * (
            val_loss if not math.isnan(val_loss) else 0.0
        )
        if not len(x_val) or score > state.best_score:
            state.best_score = score
            state.best_epoch = epoch
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.epoch = epoch
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_balanced_accuracy": val_bacc,
                "seconds": elapsed,
            }
        )
        if epoch - state.best_epoch >= cfg.patience:
            state.stopped = True
        if run is not None and checkpoint_stem is not None:
            save_checkpoint(run, checkpoint_stem, model, optimizer, best, state)
        if on_epoch is not None:
            on_epoch(
                EpochReport(
                    epoch, cfg.epochs, train_loss, val_loss, val_bacc, seen / max(elapsed, 1e-9)
                )
            )
    # Handed back on the CPU, where artifacts are written and numpy predictions made.
    best = {k: v.cpu() for k, v in best.items()}
    model.cpu().load_state_dict(best)
    return FitResult(best, state.history, state.best_epoch, resumed_from)
