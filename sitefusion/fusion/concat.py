"""Concatenation fusion: all expert vectors side by side, then one linear classifier."""

from __future__ import annotations

import torch
from torch import nn

from sitefusion.fusion.base import FusionModule, FusionOutput, rowwise_linear

__all__ = ["ConcatFusion"]


class ConcatFusion(FusionModule):
    """``[B, E, D]`` -> concatenation ``[B, E*D]`` -> dropout -> ``nn.Linear(E*D, C)``.

    Absent experts contribute zeros; the concatenation is scaled by ``E / n_present`` (as inverted
    dropout does) so that its magnitude does not shrink when experts are missing. The reported
    weights are uniform over the present experts: this head has no notion of per-sample
    reliance. ``hidden`` is accepted for a uniform constructor and not used.
    """

    mode = "concat"

    def __init__(
        self,
        num_experts: int,
        feature_dim: int,
        num_classes: int,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(num_experts, feature_dim, num_classes, hidden, dropout)
        self.drop = nn.Dropout(self.dropout)
        self.head = nn.Linear(num_experts * feature_dim, num_classes)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> FusionOutput:
        """``features [B, E, D]``, ``mask [B, E] | None`` -> ``FusionOutput([B, C], [B, E])``."""
        x, mask = self.prepare(features, mask)
        present = mask.to(x.dtype)
        n_present = present.sum(dim=1, keepdim=True)  # [B, 1], >= 1 after prepare
        flat = x.flatten(1) * (self.num_experts / n_present)
        logits = rowwise_linear(self.head, self.drop(flat))
        return FusionOutput(logits, present / n_present)
