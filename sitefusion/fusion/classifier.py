"""The fusion classifier: a fusion module plus the input preparation it was trained with.

:class:`FusionClassifier` wraps one fusion module (``concat``, ``attention`` or
``average_attention``) with optional local-head log-probabilities appended to every expert's
feature vector and per-expert standardisation with statistics of its training rows. Training it
is :func:`sitefusion.training.fusion_head.fit_fusion`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sitefusion.fusion.base import FusionOutput
from sitefusion.fusion.registry import make_fusion

__all__ = ["FusionClassifier"]


class FusionClassifier(nn.Module):
    """Input preparation + a fusion module.

    ``forward(features [B, E, D], logits [B, E, K], mask [B, E] | None) -> FusionOutput`` with
    ``logits [B, K]`` and expert weights ``[B, E]``.
    """

    def __init__(
        self,
        mode: str,
        num_experts: int,
        feature_dim: int,
        num_classes: int,
        *,
        use_local_logits: bool = True,
        hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.use_local_logits = use_local_logits
        in_dim = feature_dim + (num_classes if use_local_logits else 0)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(num_experts, in_dim))
        self.register_buffer("std", torch.ones(num_experts, in_dim))
        self.fusion = make_fusion(
            mode,
            num_experts=num_experts,
            feature_dim=in_dim,
            num_classes=num_classes,
            hidden=hidden,
            dropout=dropout,
        )
        self.config: dict[str, Any] = {
            "mode": mode,
            "num_experts": num_experts,
            "feature_dim": feature_dim,
            "num_classes": num_classes,
            "use_local_logits": use_local_logits,
            "hidden": hidden,
            "dropout": dropout,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FusionClassifier:
        """An untrained head rebuilt from :attr:`config` (as recorded in ``fusion/<name>.json``).

        Raises:
            KeyError, TypeError: ``config`` lacks a field or has one of the wrong kind.
        """
        return cls(
            config["mode"],
            config["num_experts"],
            config["feature_dim"],
            config["num_classes"],
            use_local_logits=config["use_local_logits"],
            hidden=config["hidden"],
            dropout=config["dropout"],
        )

    def prepare(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Raw inputs ``[B, E, D]`` and ``[B, E, K]`` -> ``[B, E, D(+K)]`` before standardisation."""
        if self.use_local_logits:
            return torch.cat([features, torch.log_softmax(logits, dim=-1)], dim=-1)
        return features

    def set_statistics(self, features: torch.Tensor, logits: torch.Tensor) -> None:
        """Per-expert mean/std ``[E, D(+K)]`` of the training inputs."""
        x = self.prepare(features, logits)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-4))

    def forward(
        self,
        features: torch.Tensor,
        logits: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> FusionOutput:
        """Fuse ``[B, E, D]`` features and ``[B, E, K]`` local logits; ``mask [B, E]``: experts
        present (default all)."""
        x = (self.prepare(features, logits) - self.mean) / self.std
        return self.fusion(x, mask)
