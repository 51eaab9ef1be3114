"""The one training step loop every network in sitefusion trains with.

Site experts and the pooled model (:func:`sitefusion.training.loop.fit_classifier`), fusion heads
(:func:`sitefusion.training.fusion_head.fit_fusion`) and end-to-end fine-tuning
(:func:`sitefusion.training.finetune.finetune_fusion`) each describe *what* an epoch trains on — a
generator of :class:`Batch` that does its own shuffling, augmentation and expert dropout with its
own seeded generators — and :func:`train_epoch` does the rest the same way for all of them:
learning rate of the step, forward, loss, backward, optimizer step, loss accounting, progress.

The learning rates come from :mod:`sitefusion.training.schedules`: a linear warm-up and cosine
decay evaluated per step (experts, fine-tuning) or torch's cosine annealing stepped per epoch
(fusion heads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from sitefusion.training.device import GradientStep

__all__ = ["Batch", "EpochLoss", "train_epoch"]


@dataclass(frozen=True)
class Batch:
    """One optimizer step's data: ``model(*inputs)`` is scored against ``target [B]``.

    ``step``: the step's position on its learning-rate schedule (the generator counts: a step
    skipped for a too-small batch may or may not advance the schedule).
    """

    inputs: tuple[torch.Tensor | None, ...]
    target: torch.Tensor
    step: int = 0

    @property
    def size(self) -> int:
        """Number of images ``B``."""
        return int(self.target.shape[0])


@dataclass(frozen=True)
class EpochLoss:
    """Summed, size-weighted training loss of an epoch over ``seen`` images in ``steps`` steps."""

    total: float
    seen: int
    steps: int

    @property
    def mean(self) -> float:
        """Mean loss per image (0 for an epoch without a step)."""
        return self.total / max(1, self.seen)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Iterable[Batch],
    *,
    learning_rates: Callable[[int], list[float]] | None = None,
    on_batch: Callable[[int], None] | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> EpochLoss:
    """Train ``model`` for one pass over ``batches``; returns the epoch's loss.

    ``model(*batch.inputs)`` returns logits ``[B, K]`` or an object with a ``logits`` attribute
    (a fusion's :class:`~sitefusion.fusion.FusionOutput`). ``learning_rates(batch.step)`` gives
    each parameter group's rate for the step; without it the optimizer's rates stay as they are
    (a torch scheduler the caller steps per epoch).

    ``device``: where the model is; each batch's tensors (drawn on the CPU, so that the batches
    are the same on any device) are moved there here. ``precision``: ``fp32``, or ``bf16`` /
    ``fp16`` autocast on CUDA (:mod:`sitefusion.training.device`).
    """
    device = torch.device(device)
    step_fn = GradientStep(device, precision)
    model.train()
    total, seen, steps = 0.0, 0, 0
    for batch in batches:
        if learning_rates is not None:
            for group, lr in zip(optimizer.param_groups, learning_rates(batch.step), strict=True):
                group["lr"] = lr
        steps += 1
        inputs = tuple(t.to(device) if t is not None else None for t in batch.inputs)
        with step_fn.autocast():
            out = model(*inputs)
            logits = out.logits if hasattr(out, "logits") else out
        # The loss in float32 whatever the autocast dtype (class weights, FedProx's term).
        loss = loss_fn(logits.float(), batch.target.to(device))
        step_fn(loss, optimizer)
        total += float(loss.item()) * batch.size
        seen += batch.size
        if on_batch is not None:
            on_batch(batch.size)
    return EpochLoss(total, seen, steps)
