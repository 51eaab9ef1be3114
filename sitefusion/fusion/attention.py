"""Attention fusion: gated attention over the experts, then a linear classifier."""

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

__all__ = ["AttentionFusion"]


class AttentionFusion(FusionModule):
    """Gated-attention pooling over experts (Ilse et al. 2018), as in MONAI's ``MILModel``.

    ``x [B, E, D]`` (normalised) -> per-expert projection ``h [B, E, D]`` -> gated attention
    scores -> masked softmax ``w [B, E]`` -> ``sum_e w_e h_e [B, D]`` -> dropout ->
    ``nn.Linear(D, C)``. The reported weights are ``w``.
    """

    mode = "attention"

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
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> FusionOutput:
        """``features [B, E, D]``, ``mask [B, E] | None`` -> ``FusionOutput([B, C], [B, E])``."""
        x, mask = self.prepare(features, mask)
        h = self.project(x).masked_fill(~mask.unsqueeze(-1), 0.0)
        weights = masked_softmax(self.attention(h), mask)
        pooled = torch.einsum("be,bed->bd", weights, h)
        return FusionOutput(rowwise_linear(self.head, self.drop(pooled)), weights)
