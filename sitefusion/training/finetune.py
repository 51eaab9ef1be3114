"""End-to-end fine-tuning of the fusion: copies of the experts trained together with the head.

The frozen-feature fusion can only re-weight what each expert learned on its own site. Here each
expert's copy is trained further *through the fusion*, on the fusion's training rows and with
the same presence masks: an image of site ``s`` that expert ``s`` trained on still reaches the
fusion with expert ``s`` masked, so no expert ever receives a gradient from its own training
images. The site experts themselves (``experts/<site>``, the ``local:<site>`` baselines) are
left unchanged; the fine-tuned copies belong to the fusion method.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sitefusion.config import FusionConfig
from sitefusion.evaluation.bootstrap import paired_bootstrap_difference
from sitefusion.evaluation.metrics import balanced_accuracy
from sitefusion.experts import average_state_dicts
from sitefusion.fusion.system import FusedSystem
from sitefusion.training.augment import BatchAugmenter
from sitefusion.training.device import resolve_device
from sitefusion.training.engine import Batch, train_epoch
from sitefusion.training.federated import proximal_loss
from sitefusion.training.fusion_head import expert_dropout_mask
from sitefusion.training.loop import class_weights, recompute_batchnorm
from sitefusion.training.schedules import cosine

__all__ = ["compare_soup_to_members", "finetune_fusion", "finetune_soup"]


def finetune_fusion(
    system: FusedSystem,
    images: np.ndarray,
    labels: np.ndarray,
    presence: np.ndarray,
    *,
    cfg: FusionConfig,
    num_classes: int,
    seed: int,
    batch_size: int = 64,
    on_epoch: Callable[[int, float], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    class_weight: torch.Tensor | None = None,
    schedule: bool = True,
    mu: float = 0.0,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> list[float]:
    """Train ``system`` end to end on normalized images ``[M, C, *S]``; returns the loss curve.

    ``presence [M, E]`` are the rows' expert masks (an image never reaches the expert that
    trained on it). Experts learn at ``cfg.finetune_lr``, the head at ``cfg.lr``, both on a
    cosine schedule, with the experts' augmentation and expert dropout. The loss carries
    scikit-learn's "balanced" class weights, as the frozen-feature heads do.
    ``class_weight``: the loss's class weights instead of those of ``labels`` (a federated site
    uses the federation's); ``schedule=False``: the two rates held constant (a federated round,
    whose rates the coordinator sets on its own schedule over the rounds); ``mu > 0``: FedProx's
    proximal term to the weights ``system`` holds at the start (a federated round's global ones).
    ``device`` / ``precision``: where and how it trains (``training.device``,
    ``training.precision``); ``system`` is handed back on the CPU.
    """
    device = resolve_device(device)
    system.to(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    e = presence.shape[1]
    optimizer = torch.optim.AdamW(
        [
            {"params": system.experts.parameters(), "lr": cfg.finetune_lr, "base": cfg.finetune_lr},
            {"params": system.head.parameters(), "lr": cfg.lr, "base": cfg.lr},
        ],
        weight_decay=1e-4,
    )
    weight = class_weights(labels, num_classes, power=1.0) if class_weight is None else class_weight
    loss_fn = proximal_loss(nn.CrossEntropyLoss(weight=weight.to(device)), system, mu)
    augment = BatchAugmenter(images.ndim - 2, seed)
    n = len(labels)
    total_steps = max(1, math.ceil(n / batch_size)) * cfg.finetune_epochs
    bases = [group["base"] for group in optimizer.param_groups]
    counter = [0]  # steps taken so far, across epochs: the schedule's position

    def batches(epoch: int) -> Iterator[Batch]:
        augment.reseed(seed * 7919 + epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for i in range(0, n, batch_size):
            idx = np.sort(order[i : i + batch_size])
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            base = torch.from_numpy(presence[idx])
            mask = base & expert_dropout_mask(len(idx), e, cfg.expert_dropout, gen)
            mask = torch.where(mask.any(1, keepdim=True), mask, base)
            x = augment(images[idx])
            yield Batch((x, mask), torch.from_numpy(labels[idx].astype(np.int64)), counter[0])
            counter[0] += 1

    curve: list[float] = []
    for epoch in range(cfg.finetune_epochs):
        loss = train_epoch(
            system,
            optimizer,
            loss_fn,
            batches(epoch),
            learning_rates=lambda step: [
                cosine(b, step, total_steps) if schedule else b for b in bases
            ],
            on_batch=on_batch,
            device=device,
            precision=precision,
        )
        curve.append(loss.mean)
        if on_epoch is not None:
            on_epoch(epoch, curve[-1])
    system.cpu().eval()
    return curve


def finetune_soup(
    system: FusedSystem,
    images: np.ndarray,
    labels: np.ndarray,
    presence: np.ndarray,
    *,
    cfg: FusionConfig,
    num_classes: int,
    seed: int,
    batch_size: int = 64,
    on_epoch: Callable[[int, float], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_member: Callable[[int, FusedSystem], None] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> list[list[float]]:
    """:func:`finetune_fusion` ``cfg.finetune_soup`` times from the same start, then average.

    Every member starts from the same experts and head and differs only in its seed (data order,
    augmentation, expert dropout); the result is the mean of their weights, a "model soup"
    (Wortsman et al., ICML 2022), with BatchNorm statistics recomputed on ``images``. Averaging
    works when the members stay in one basin of the loss, which fine-tuning from trained experts
    does; it costs ``finetune_soup`` times the training and nothing at inference. Returns one
    loss curve per member; ``on_epoch`` counts epochs across members. ``on_member(m, system)``
    is called with each member as soon as it is trained (in eval mode, on the CPU), so that a
    caller can score the members against the soup. ``device`` / ``precision``: see
    :func:`finetune_fusion`; the soup is handed back on the CPU.
    """
    k = cfg.finetune_soup
    start = copy.deepcopy(system.state_dict()) if k > 1 else None
    states, curves = [], []
    for member in range(k):
        if start is not None:
            system.load_state_dict(start)
        offset = member * cfg.finetune_epochs

        def member_epoch(epoch: int, loss: float, offset: int = offset) -> None:
            if on_epoch is not None:
                on_epoch(offset + epoch, loss)

        curves.append(
            finetune_fusion(
                system,
                images,
                labels,
                presence,
                cfg=cfg,
                num_classes=num_classes,
                seed=seed + member,
                batch_size=batch_size,
                on_epoch=member_epoch,
                on_batch=on_batch,
                device=device,
                precision=precision,
            )
        )
        if on_member is not None:
            on_member(member, system)
        if k > 1:
            states.append({name: t.detach().clone() for name, t in system.state_dict().items()})
    if k == 1:
        return curves
    system.load_state_dict(average_state_dicts(states))
    # The members' running statistics do not describe their average's activations: recompute
    # them over the (unaugmented) training images with PyTorch's SWA helper.
    recompute_batchnorm(system.to(resolve_device(device)), images, batch_size)
    system.cpu().eval()
    return curves


def compare_soup_to_members(
    labels: np.ndarray,
    groups: np.ndarray,
    member_logits: Sequence[np.ndarray],
    soup_logits: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced accuracy of each soup member and of the soup on held-out images, and whether the
    soup is *measurably* below its best member.

    ``labels [N]``, ``groups [N]`` (patients or lesions), ``member_logits``: K arrays
    ``[N, C]``, ``soup_logits [N, C]``. The difference soup − best member comes with a paired
    95% bootstrap interval that resamples groups; ``below_best_member`` is true only when the
    whole interval is below 0. On a held-out set of a few hundred images in several classes one
    rare-class image moves balanced accuracy by hundredths, so a plain "soup < best member"
    is mostly noise (docs/benchmarks.md: five such warnings on 172 images, none confirmed on
    1,707).
    """
    if not member_logits:
        raise ValueError("compare_soup_to_members needs at least one member")
    scores = [balanced_accuracy(labels, m) for m in member_logits]
    best = int(np.nanargmax(scores))
    diff = paired_bootstrap_difference(
        balanced_accuracy, labels, soup_logits, member_logits[best], groups, n_boot, seed
    )
    return {
        "balanced_accuracy_members": scores,
        "balanced_accuracy_soup": balanced_accuracy(labels, soup_logits),
        "soup_minus_best_member": {"value": diff.value, "ci95": [diff.ci_low, diff.ci_high]},
        "below_best_member": bool(diff.ci_high < 0),
    }
