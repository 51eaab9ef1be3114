"""What every fusion head shares: its output type, argument checks and the input stage.

A fusion head takes the pooled features of ``E`` site experts, ``features [B, E, D]``, and a
presence mask ``mask [B, E]`` (bool, ``True`` = expert present; ``None`` = all present), and returns
:class:`FusionOutput` ``(logits [B, C], weights [B, E])``. The weights say how much each expert was
relied on: they are >= 0, exactly 0 for absent experts, sum to 1 over the present ones and are
never NaN. A row without any present expert raises :class:`FusionInputError`.

Shared design choices:

- **Absent experts are zeroed first** (``torch.where``, not multiplication), so whatever an absent
  slot holds (stale values, NaN placeholders) cannot reach the output or the gradients.
- **When predicting, every linear map is computed row by row** (:func:`rowwise_linear`, and
  the per-expert projection likewise): a row's logits do not depend on the other rows of its
  batch, so an item scored in any batch gets the same bits (a matrix product's blocking
  changed the last bits of the HAM10000 head's 142 -> 7 classifier with the row's place in a
  batch of 16), and scoring runs the head once per batch instead of once per item. Training
  keeps the matrix products.
- **Per-expert LayerNorm of the inputs** (no affine): every present expert vector is normalised
  to zero mean and unit variance over its ``D`` features. Experts are trained separately and
  their embeddings have different scales; without this the largest-scale expert would dominate
  sums and the attention scores. The cost is that an embedding's overall magnitude is not seen
  by the fusion. Learned scaling comes after, per expert (see the heads).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sitefusion.errors import ConfigError, SiteFusionError

__all__ = [
    "ExpertProjection",
    "FusionInputError",
    "FusionModule",
    "FusionOutput",
    "masked_softmax",
    "rowwise_linear",
]


class FusionOutput(NamedTuple):
    """Output of a fusion head: ``logits [B, C]`` and expert ``weights [B, E]``."""

    logits: torch.Tensor
    weights: torch.Tensor


class FusionInputError(SiteFusionError, ValueError):
    """A fusion input is inconsistent: wrong shapes, a non-bool mask, or a row without experts."""


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of ``scores [B, E]`` over the experts where ``mask [B, E]`` is True.

    Absent entries get ``-inf`` *before* the softmax, so they receive exactly 0 and take no part
    in the normalisation. Every row must have at least one present expert (checked by
    :meth:`FusionModule.prepare`); then each row has a finite maximum and neither the result nor
    its gradient can be NaN (the softmax gradient at a zero probability is zero).
    """
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return weights.masked_fill(~mask, 0.0)


def _positive_int(cls: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{cls}: {what} is {value!r}; expected a positive integer")
    return value


class FusionModule(nn.Module):
    """Base class of the fusion heads: validates arguments and prepares the inputs.

    Args:
        num_experts: number of experts ``E`` (at least 1).
        feature_dim: feature size ``D`` of every expert.
        num_classes: number of classes ``C``.
        hidden: hidden size of the attention scorer (unused by :class:`ConcatFusion`).
        dropout: dropout before the final linear layer, in ``[0, 1)``.
    """

    mode: ClassVar[str] = ""

    def __init__(
        self,
        num_experts: int,
        feature_dim: int,
        num_classes: int,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_experts = _positive_int(name, "num_experts", num_experts)
        self.feature_dim = _positive_int(name, "feature_dim", feature_dim)
        self.num_classes = _positive_int(name, "num_classes", num_classes)
        self.hidden = _positive_int(name, "hidden", hidden)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not math.isfinite(dropout)
            or not 0.0 <= dropout < 1.0
        ):
            raise ConfigError(f"{name}: dropout is {dropout!r}; expected a fraction in [0, 1)")
        self.dropout = float(dropout)

    def describe(self) -> dict[str, Any]:
        """JSON-safe constructor arguments with the mode: ``make_fusion(**d)`` rebuilds it."""
        return {
            "mode": self.mode,
            "num_experts": self.num_experts,
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }

    def prepare(
        self, features: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check the inputs and normalise them.

        Args:
            features: ``[B, E, D]`` floating-point expert features.
            mask: ``[B, E]`` bool, ``True`` = present, or ``None`` (all present).

        Returns:
            ``(x, mask)``: ``x [B, E, D]`` layer-normalised per expert, exactly 0 for absent
            experts; ``mask [B, E]`` bool.

        Raises:
            FusionInputError: wrong shapes or dtypes, or a row with no present expert.
        """
        name = type(self).__name__
        if not isinstance(features, torch.Tensor) or features.ndim != 3:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
            raise FusionInputError(f"{name}: features must be a [B, E, D] tensor, got {shape}")
        batch, experts, dim = features.shape
        if experts != self.num_experts or dim != self.feature_dim:
            raise FusionInputError(
                f"{name}: features have shape {tuple(features.shape)}; expected "
                f"[B, {self.num_experts}, {self.feature_dim}]"
            )
        if not features.is_floating_point():
            raise FusionInputError(
                f"{name}: features are {features.dtype}; expected floating point"
            )
        if mask is None:
            mask = torch.ones(batch, experts, dtype=torch.bool, device=features.device)
        elif not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask)
            raise FusionInputError(
                f"{name}: mask must be a bool tensor (True = present), got {got}"
            )
        elif tuple(mask.shape) != (batch, experts):
            raise FusionInputError(
                f"{name}: mask has shape {tuple(mask.shape)}; expected [{batch}, {experts}]"
            )
        else:
            mask = mask.to(features.device)
        empty = ~mask.any(dim=1)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise FusionInputError(
                f"{name}: {len(rows)} row(s) have no present expert (rows {rows[:10]}"
                f"{' ...' if len(rows) > 10 else ''}); at least one expert per sample is needed"
            )
        present = mask.unsqueeze(-1)
        x = torch.where(
            present, features, torch.zeros((), dtype=features.dtype, device=features.device)
        )
        # The checked int, not the traced shape: an ONNX export needs a constant size here.
        x = F.layer_norm(x, (self.feature_dim,))
        return torch.where(present, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> FusionOutput:
        """``features [B, E, D]``, ``mask [B, E] | None`` -> ``FusionOutput([B, C], [B, E])``."""
        raise NotImplementedError


def rowwise_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for ``x [..., D_in]``; when predicting (``layer`` in eval mode) each row is
    summed in one order whatever the batch: an elementwise product summed over the inputs,
    where a matrix product's kernel may block rows differently with their place in the batch.
    Training keeps the matrix product, the faster of the two."""
    if layer.training:
        return layer(x)
    return (x.unsqueeze(-2) * layer.weight).sum(-1) + layer.bias


class ExpertProjection(nn.Module):
    """A separate linear map per expert: ``[B, E, D_in]`` -> ``[B, E, D_out]``.

    Experts are trained separately, so feature ``j`` of one expert has nothing to do with feature
    ``j`` of another; summing or averaging raw vectors across experts mixes unrelated
    coordinates. This maps every expert into a shared space first. Its per-expert bias also acts
    as a learned expert-identity embedding, which lets the attention be site-aware. Initialised
    to the identity (zero bias) when ``D_in == D_out``, so training starts from plain averaging of
    normalised features.
    """

    def __init__(self, num_experts: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(num_experts, out_dim))
        if in_dim == out_dim:
            with torch.no_grad():
                self.weight.copy_(torch.eye(in_dim).expand(num_experts, in_dim, in_dim))
        else:
            bound = 1.0 / math.sqrt(in_dim)
            nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, E, D_in]`` -> ``[B, E, D_out]``; row by row when predicting (see
        :func:`rowwise_linear`)."""
        if self.training:
            return torch.einsum("bei,eio->beo", x, self.weight) + self.bias
        return (x.unsqueeze(-1) * self.weight).sum(-2) + self.bias
