"""The one way a run builds its networks: every expert, the pooled model and the weight average
share the configured backbone and the run's geometry."""

from __future__ import annotations

from sitefusion.config import Config
from sitefusion.experts.expert import SiteExpert

__all__ = ["build_expert"]


def build_expert(cfg: Config, num_classes: int) -> SiteExpert:
    """A fresh expert of the configured backbone for this run's geometry (``[B, C, *S]`` in,
    ``[B, num_classes]`` logits out, ``embed -> [B, D]`` with ``D = expert.out_channels``)."""
    return SiteExpert(
        backbone=cfg.expert.backbone,
        spatial_dims=len(cfg.data.spatial_size),
        in_channels=cfg.data.channels,
        feature_dim=cfg.expert.out_channels,
        num_classes=num_classes,
        params=dict(cfg.expert.params),
    )
