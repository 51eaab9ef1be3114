"""What a site computes in one round of federated training, and how the coordinator combines it.

Pure functions on in-memory arrays: the Flower ClientApp (:mod:`sitefusion.federated`) and the
in-process FedAvg baseline (:class:`sitefusion.methods.fedavg.FedAvgMethod`) call the same ones.

- :func:`local_network_update`: a few local epochs of a network of the experts' architecture
  (the FedAvg baseline) from the global weights, on the site's own normalized images.
- :func:`local_head_update`: a few local epochs of the fusion head from the global head, on the
  site's own cached expert features (with the same presence masks and expert dropout as the
  central head).
- :func:`feature_moments` / :func:`combine_moments`: the head standardises its inputs by their
  mean and standard deviation over all training rows; each site sends the count, sum and sum of
  squares of its rows (aggregates of many images, never one image's features) and the
  coordinator combines them into exactly the statistics of the pooled rows.
- :func:`federated_average`: the coordinator's weighted average (FedAvg) of the sites' weights.

With ``mu > 0`` a site's loss carries FedProx's proximal term ``mu / 2 * ||w - w_global||^2``
(Li et al., MLSys 2020), which keeps local updates near the global model when sites differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sitefusion.config import FusionConfig, TrainingConfig
from sitefusion.experts import average_state_dicts
from sitefusion.fusion.classifier import FusionClassifier
from sitefusion.training.augment import BatchAugmenter
from sitefusion.training.device import resolve_device
from sitefusion.training.engine import Batch, train_epoch
from sitefusion.training.fusion_head import expert_dropout_mask
from sitefusion.training.loop import class_weights, epoch_steps

__all__ = [
    "LocalUpdate",
    "combine_moments",
    "feature_moments",
    "federated_average",
    "local_head_update",
    "local_network_update",
    "proximal_loss",
]


@dataclass(frozen=True)
class LocalUpdate:
    """A site's reply to one round: its new weights, how many examples it trained on, and the
    mean training loss of its last local epoch."""

    state: dict[str, torch.Tensor]
    examples: int
    loss: float


def proximal_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], model: nn.Module, mu: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss_fn`` plus FedProx's ``mu / 2 * ||w - w_global||^2`` (``w_global``: the weights the
    round started from); ``loss_fn`` itself when ``mu`` is 0."""
    if mu <= 0:
        return loss_fn
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params]

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
        return loss_fn(logits, target) + 0.5 * mu * prox

    return loss


def local_network_update(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    cfg: TrainingConfig,
    num_classes: int,
    epochs: int,
    lr: float,
    seed: int,
    mu: float = 0.0,
) -> LocalUpdate:
    """Train ``model`` (already holding the global weights) for ``epochs`` local epochs.

    It trains on ``cfg.device`` with ``cfg.precision`` and is handed back on the CPU.

    The experts' recipe: square-root class weights of the site's labels, AdamW at ``lr`` (the
    coordinator's rate for this round) with the config's weight decay, the experts'
    augmentation, at least ``cfg.min_steps_per_epoch`` steps per epoch. A fresh optimizer every
    round, as in FedAvg. ``x`` are the site's normalized images.
    """
    if len(y) < 2:
        raise ValueError(f"a local update needs at least 2 training images; the site has {len(y)}")
    device = resolve_device(cfg.device)
    model.to(device)
    torch.manual_seed(seed)
    weight = class_weights(y, num_classes) if cfg.class_weighting else None
    loss_fn = proximal_loss(
        nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None), model, mu
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    augment = BatchAugmenter(x.ndim - 2, seed) if cfg.augment else None
    n = len(y)
    steps = epoch_steps(n, cfg)

    def batches(epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([seed, epoch])
        if augment is not None:
            augment.reseed(seed * 7919 + epoch)
        repeats = math.ceil(steps * cfg.batch_size / n)
        order = np.concatenate([rng.permutation(n) for _ in range(repeats)])
        for step in range(steps):
            idx = np.sort(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
            if len(idx) < 2:
                continue
            xb = augment(x[idx]) if augment is not None else torch.from_numpy(x[idx])
            yield Batch((xb,), torch.from_numpy(y[idx]).long(), step)

    loss = 0.0
    for epoch in range(epochs):
        loss = train_epoch(
            model, optimizer, loss_fn, batches(epoch), device=device, precision=cfg.precision
        ).mean
    model.cpu().eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return LocalUpdate(state, n, loss)


def local_head_update(
    head: FusionClassifier,
    features: np.ndarray,
    logits: np.ndarray,
    labels: np.ndarray,
    presence: np.ndarray,
    *,
    cfg: FusionConfig,
    num_classes: int,
    epochs: int,
    lr: float,
    seed: int,
    mu: float = 0.0,
    class_weight: torch.Tensor | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> LocalUpdate:
    """Train the global ``head`` for ``epochs`` local epochs on a site's cached features.

    ``features [N, E, D]``, ``logits [N, E, K]``, ``labels [N]``, ``presence [N, E]`` (an
    expert is absent on the images it trained on). The central head's recipe: balanced class
    weights (``class_weight``: the federation's, from the pooled class counts, so that every site
    weighs classes alike; default: the site's own), expert dropout, AdamW at ``lr``. The head's
    standardisation statistics are not trained (they come from :func:`combine_moments`).
    ``device``: where it trains; the head is handed back on the CPU.
    """
    n, e, _ = features.shape
    if n < 1:
        raise ValueError("a local head update needs at least one row")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    f = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    lg = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    base = torch.from_numpy(presence.astype(bool))
    weight = class_weight if class_weight is not None else class_weights(labels, num_classes, 1.0)
    device = resolve_device(device)
    head.to(device)
    loss_fn = proximal_loss(nn.CrossEntropyLoss(weight=weight.to(device)), head, mu)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=cfg.weight_decay)

    def batches() -> Iterator[Batch]:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            mask = base[idx]
            if cfg.expert_dropout > 0 and e > 1:
                both = mask & expert_dropout_mask(len(idx), e, cfg.expert_dropout, gen)
                mask = torch.where(both.any(1, keepdim=True), both, mask)
            yield Batch((f[idx], lg[idx], mask), y[idx])

    loss = 0.0
    for _ in range(epochs):
        loss = train_epoch(head, optimizer, loss_fn, batches(), device=device).mean
    head.cpu().eval()
    return LocalUpdate({k: v.detach().clone() for k, v in head.state_dict().items()}, n, loss)


def feature_moments(
    head: FusionClassifier, features: np.ndarray, logits: np.ndarray
) -> dict[str, torch.Tensor]:
    """Count, sum and sum of squares ``[E, D(+K)]`` of the head's inputs over a site's rows."""
    with torch.no_grad():
        x = head.prepare(
            torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)),
        ).double()
    return {
        "count": torch.tensor([float(len(x))], dtype=torch.float64),
        "sum": x.sum(0),
        "sum_sq": (x**2).sum(0),
    }


def combine_moments(
    moments: Sequence[Mapping[str, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation of the pooled rows, from each site's
    :func:`feature_moments`; the standard deviation is clamped at 1e-4 as the central head's."""
    n = sum(float(m["count"].item()) for m in moments)
    if n < 2:
        raise ValueError(f"the head's statistics need at least 2 rows over all sites; got {n:.0f}")
    total = torch.stack([m["sum"] for m in moments]).sum(0)
    total_sq = torch.stack([m["sum_sq"] for m in moments]).sum(0)
    mean = total / n
    var = ((total_sq - n * mean**2) / (n - 1)).clamp_min(0.0)
    return mean.float(), var.sqrt().clamp_min(1e-4).float()


def federated_average(
    updates: Mapping[str, LocalUpdate], order: Sequence[str]
) -> dict[str, torch.Tensor]:
    """FedAvg: the sites' weights averaged with their example counts as weights.

    ``order`` fixes the order of summation (sites sorted by name): replies arrive in any order,
    and floating-point sums in another order give other bits, so runs would not repeat.
    """
    sites = [s for s in order if s in updates]
    if not sites:
        raise ValueError("no site replied in this round")
    return average_state_dicts(
        [updates[s].state for s in sites], [float(updates[s].examples) for s in sites]
    )
