"""Averaging plus attention fusion (the product default)."""

from __future__ import annotations

import torch
from torch import nn

from sitefusion.fusion.base import (
    ExpertProjection,
    FusionModule,
    FusionOutput,
    masked_softmax,
    rowwise_linear,
)
from sitefusion.fusion.gated_attention import GatedAttention

__all__ = ["AverageAttentionFusion"]


class AverageAttentionFusion(FusionModule):
    """Attention-weighted sum and plain mean of the experts, side by side, then a linear head.

    ``x [B, E, D]`` (normalised) -> per-expert projection ``h [B, E, D]`` (its per-expert bias
    doubles as an expert-identity embedding, so the attention can be site-aware) ->
    ``[sum_e w_e h_e, mean_{e present} h_e]`` ``[B, 2D]`` -> dropout -> ``nn.Linear(2D, C)``.

    The mean is a stable, input-independent summary (the attention cannot collapse onto one
    expert without the head still seeing every present one); the attention half adds per-sample
    reliance. No extra LayerNorm before the head: both halves are convex combinations of vectors
    that were already layer-normalised and projected. The reported weights are the attention
    weights ``w``.
    """

    mode = "average_attention"

    def __init__(
        self,
        num_experts: int,
        feature_dim: int,
        num_classes: int,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(num_experts, feature_dim, num_classes, hidden, dropout)
        self.project = ExpertProjection(num_experts, feature_dim, feature_dim)
        self.attention = GatedAttention(feature_dim, self.hidden)
        self.drop = nn.Dropout(self.dropout)
        self.head = nn.Linear(2 * feature_dim, num_classes)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> FusionOutput:
        """``features [B, E, D]``, ``mask [B, E] | None`` -> ``FusionOutput([B, C], [B, E])``."""
        x, mask = self.prepare(features, mask)
        h = self.project(x).masked_fill(~mask.unsqueeze(-1), 0.0)
        weights = masked_softmax(self.attention(h), mask)
        attended = torch.einsum("be,bed->bd", weights, h)
        present = mask.to(h.dtype)
        mean = torch.einsum("be,bed->bd", present / present.sum(dim=1, keepdim=True), h)
        logits = rowwise_linear(self.head, self.drop(torch.cat([attended, mean], dim=1)))
        return FusionOutput(logits, weights)
