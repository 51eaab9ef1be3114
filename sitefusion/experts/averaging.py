"""One-shot parameter averaging of expert weights (FedAvg-style), for the weight-average baseline.

Averaging parameters is only meaningful between networks of the same architecture that started
from the same initial weights (build every expert after the same ``torch.manual_seed``). BatchNorm
running statistics are averaged like parameters; the average of per-site variances is not the
variance of the pooled data, so a caller that can should re-estimate them on data.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch

from sitefusion.errors import SiteFusionError

__all__ = ["StateDictMismatchError", "average_state_dicts"]


class StateDictMismatchError(SiteFusionError, ValueError):
    """State dicts to be averaged differ in keys, shapes or kinds of tensor."""


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    ws = list(weights)
    if len(ws) != n:
        raise ValueError(f"average_state_dicts: got {len(ws)} weights for {n} state dicts")
    for i, w in enumerate(ws):
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
            raise ValueError(
                f"average_state_dicts: weight {i} is {w!r}; expected a finite number >= 0"
            )
    total = math.fsum(ws)
    if total <= 0:
        raise ValueError("average_state_dicts: the weights sum to 0; expected a positive sum")
    return [float(w) / total for w in ws]


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts with identical keys and shapes.

    Args:
        state_dicts: ``N`` state dicts (``module.state_dict()``), same keys and shapes.
        weights: ``N`` non-negative weights, for example the sites' training-set sizes; they are
            normalised to sum to 1. ``None`` gives equal weights.

    Returns:
        A new state dict (the inputs are not modified). Floating-point (and complex) tensors are
        the weighted mean, computed in float64 and cast back to the first state dict's dtype.
        Integer tensors (``num_batches_tracked``) are the weighted mean rounded to the nearest
        integer; boolean tensors must be equal in every state dict and are copied.

    Raises:
        StateDictMismatchError: keys, shapes or tensor kinds differ.
        ValueError: no state dicts, or invalid weights.
    """
    dicts = list(state_dicts)
    if not dicts:
        raise ValueError("average_state_dicts: expected at least one state dict, got none")
    w = _check_weights(weights, len(dicts))
    reference = dicts[0]
    keys = list(reference)
    for i, sd in enumerate(dicts[1:], start=1):
        if set(sd) != set(keys):
            missing = sorted(set(keys) - set(sd))
            extra = sorted(set(sd) - set(keys))
            raise StateDictMismatchError(
                f"state dict {i} has other keys than state dict 0: missing {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}, extra {extra[:5]}"
                f"{' ...' if len(extra) > 5 else ''}"
            )
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        ref = reference[key]
        tensors = [sd[key] for sd in dicts]
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise StateDictMismatchError(
                    f"state dict {i}: {key!r} is a {type(t).__name__}, not a tensor"
                )
            if t.shape != ref.shape:
                raise StateDictMismatchError(
                    f"{key!r} has shape {tuple(t.shape)} in state dict {i} but "
                    f"{tuple(ref.shape)} in state dict 0"
                )
            if _kind(t) != _kind(ref):
                raise StateDictMismatchError(
                    f"{key!r} is {t.dtype} in state dict {i} but {ref.dtype} in state dict 0"
                )
        out[key] = _average(key, tensors, w)
    return out


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    if t.is_floating_point() or t.is_complex():
        return "float"
    return "int"


def _average(key: str, tensors: list[torch.Tensor], w: list[float]) -> torch.Tensor:
    ref = tensors[0]
    kind = _kind(ref)
    if kind == "bool":
        if any(not torch.equal(t.to(ref.device), ref) for t in tensors[1:]):
            raise StateDictMismatchError(f"{key!r} is a boolean tensor that differs between them")
        return ref.detach().clone()
    wide = torch.complex128 if ref.is_complex() else torch.float64
    acc = torch.zeros(ref.shape, dtype=wide, device=ref.device)
    for t, wi in zip(tensors, w, strict=True):
        acc += t.detach().to(device=ref.device, dtype=wide) * wi
    if kind == "int":
        return acc.round().to(ref.dtype)
    return acc.to(ref.dtype)
