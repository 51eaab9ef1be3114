"""Gated attention scorer (Ilse et al. 2018, "Attention-based Deep Multiple Instance Learning")."""

from __future__ import annotations

import torch
from torch import nn

from sitefusion.fusion.base import rowwise_linear

__all__ = ["GatedAttention"]


class GatedAttention(nn.Module):
    """Scores each expert vector: ``s = w^T (tanh(V h) * sigmoid(U h))``.

    The same scorer as the gated variant of MONAI's ``MILModel`` attention pooling.

    Args:
        dim: input feature size ``D``.
        hidden: size of the gated hidden layer.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.V = nn.Linear(dim, hidden)
        self.U = nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h [B, E, D]`` -> unnormalised scores ``[B, E]``."""
        gated = torch.tanh(rowwise_linear(self.V, h)) * torch.sigmoid(rowwise_linear(self.U, h))
        scores: torch.Tensor = rowwise_linear(self.w, gated).squeeze(-1)
        return scores
