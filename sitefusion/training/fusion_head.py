"""Training the fusion head on cached expert features.

Class-balanced cross-entropy and *expert dropout* (random experts masked out), so the head copes
with absent experts at prediction time and leave-one-site-out needs no special model.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from sitefusion.config import FusionConfig
from sitefusion.fusion.classifier import FusionClassifier
from sitefusion.training.device import resolve_device
from sitefusion.training.engine import Batch, train_epoch
from sitefusion.training.loop import class_weights

__all__ = ["expert_dropout_mask", "fit_fusion"]


def expert_dropout_mask(n: int, e: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """A presence mask ``[n, e]`` with each expert dropped with probability ``p``, never all."""
    mask = torch.rand(n, e, generator=gen) >= p
    empty = ~mask.any(1)
    if empty.any():
        keep = torch.randint(0, e, (int(empty.sum()),), generator=gen)
        mask[empty.nonzero().squeeze(1), keep] = True
    return mask


def fit_fusion(
    mode: str,
    features: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    cfg: FusionConfig,
    num_classes: int,
    seed: int,
    presence: np.ndarray | None = None,
    expert_dropout: float = 0.2,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> tuple[FusionClassifier, list[float]]:
    """Fit a :class:`FusionClassifier` on cached features; returns it (eval mode) and the loss curve.

    Args:
        features: ``[N, E, D]`` fusion-split features; logits: ``[N, E, K]``; labels: ``[N]``.
        presence: optional ``[N, E]`` boolean mask of experts that may be used (leave-one-site-out
            passes a mask with the held-out site's expert absent).
        device: where the head trains (``training.device``); it is returned on the CPU.
    """
    device = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n, e, d = features.shape
    model = FusionClassifier(
        mode,
        e,
        d,
        num_classes,
        use_local_logits=cfg.use_local_logits,
        hidden=cfg.hidden,
        dropout=cfg.dropout,
    )
    f = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    lg = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    base_mask = (
        torch.from_numpy(presence.astype(bool))
        if presence is not None
        else torch.ones(n, e, dtype=torch.bool)
    )
    with torch.no_grad():
        model.set_statistics(f, lg)
    model.to(device)
    # scikit-learn's "balanced" weights: square-root weights, as for the CNNs, did worse here
    # (docs/benchmarks.md).
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(labels, num_classes, power=1.0).to(device))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)

    def batches() -> Iterator[Batch]:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            mask = base_mask[idx]
            if expert_dropout > 0 and e > 1:
                drop = expert_dropout_mask(len(idx), e, expert_dropout, gen)
                both = mask & drop
                mask = torch.where(both.any(1, keepdim=True), both, mask)
            yield Batch((f[idx], lg[idx], mask), y[idx])

    curve: list[float] = []
    for _ in range(cfg.epochs):
        curve.append(train_epoch(model, opt, loss_fn, batches(), device=device).mean)
        sched.step()
    model.cpu().eval()
    return model, curve
