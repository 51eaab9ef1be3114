"""What the coordinator checks before it averages a site's update.

A site (buggy or hostile) that returns NaN or infinite weights, tensors of another shape or
dtype, or an absurd example count would poison the global model of every hospital. Each update
is checked against the round's global weights and the site's known size; an update that fails
is refused with the reason, and its site is left out of that round as a site that did not answer
is. The size of each update (the L2 norm of its change from the global weights) is reported per
site as a ratio to the round's median, and an update more than ``norm_bound`` times the median
is refused too (0 turns the bound off).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

import torch

from sitefusion.federated.messages import RoundReply

__all__ = ["check_update", "update_norm_ratios"]


def check_update(
    reply: RoundReply, expected: Mapping[str, torch.Tensor], max_examples: int
) -> str | None:
    """Why ``reply`` cannot be averaged with the global weights ``expected``, or ``None``.

    Checked: the same tensor names, each tensor's shape and dtype, only finite values, an
    example count from 1 to ``max_examples`` (the site's known number of training rows for the
    phase) and a finite loss.
    """
    got = reply.weights
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            more = " ..." if len(unexpected) > 3 else ""
            parts.append(f"unexpected {', '.join(unexpected[:3])}{more}")
        return f"its weights have other tensor names ({'; '.join(parts)})"
    for name, reference in expected.items():
        tensor = got[name]
        if tuple(tensor.shape) != tuple(reference.shape):
            return (
                f"tensor {name!r} has shape {tuple(tensor.shape)}; the global model's is "
                f"{tuple(reference.shape)}"
            )
        if tensor.dtype != reference.dtype:
            return (
                f"tensor {name!r} has dtype {tensor.dtype}; the global model's is {reference.dtype}"
            )
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum().item())
            if bad:
                return f"tensor {name!r} has {bad} non-finite value(s) (NaN or infinity)"
    if not 1 <= reply.examples <= max_examples:
        return (
            f"its example count {reply.examples} is outside 1..{max_examples} (the rows this "
            "site holds for the phase)"
        )
    if not math.isfinite(reply.loss):
        return f"its loss is {reply.loss}"
    return None


def update_norm_ratios(
    replies: Mapping[str, RoundReply], expected: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """Each site's update size ``||w_site - w_global||`` (over floating-point tensors) divided
    by the median over the sites (1.0 for every site when the median is 0)."""
    norms = {}
    for site, reply in replies.items():
        total = 0.0
        for name, reference in expected.items():
            if reference.is_floating_point():
                diff = reply.weights[name].double() - reference.double()
                total += float((diff * diff).sum().item())
        norms[site] = math.sqrt(total)
    median = statistics.median(norms.values()) if norms else 0.0
    if median <= 0:
        return dict.fromkeys(norms, 1.0)
    return {site: n / median for site, n in norms.items()}
