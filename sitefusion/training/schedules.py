"""Learning-rate schedules: cosine decay, with a linear warm-up for networks trained from
their initial weights.

Each function returns the rate of one optimizer step from the base rate. They are written out
rather than composed from ``torch.optim.lr_scheduler`` classes because the trained weights, and
the figures in docs/benchmarks.md, depend on these rates to the last bit: the same curve
computed in another order of floating-point operations trains different weights. The fusion
heads use torch's :class:`~torch.optim.lr_scheduler.CosineAnnealingLR` per epoch as they always
have.
"""

from __future__ import annotations

import math

__all__ = ["WARMUP", "cosine", "warmup_cosine"]

#: Share of the schedule spent warming up from a tenth of the base rate (experts, pooled).
WARMUP = 0.05


def warmup_cosine(base: float, epoch: int, step: int, steps: int, epochs: int) -> float:
    """Rate at ``step`` of ``steps`` in ``epoch`` of ``epochs``: linear warm-up from ``base/10``
    over the first :data:`WARMUP` of training, then cosine decay to 0."""
    progress = (epoch + step / max(1, steps)) / epochs
    if progress < WARMUP:
        return base * (0.1 + 0.9 * progress / WARMUP)
    return base * 0.5 * (1 + math.cos(math.pi * (progress - WARMUP) / (1 - WARMUP)))


def cosine(base: float, step: int, total_steps: int) -> float:
    """Rate at optimizer step ``step`` of ``total_steps``: cosine decay from ``base`` to 0
    (fine-tuning starts from trained weights and needs no warm-up)."""
    return base * 0.5 * (1 + math.cos(math.pi * step / total_steps))
