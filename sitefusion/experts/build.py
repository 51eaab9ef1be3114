"""The one way a run builds its networks: every expert, the pooled model and the weight average
share the configured backbone and the run's geometry.

The config sits above this package (its schema checks backbone names and parameters against
:mod:`sitefusion.experts.backbones`), so :func:`build_expert` names what it reads of a config as
a protocol, :class:`ExpertRunConfig`, which :class:`sitefusion.config.Config` satisfies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sitefusion.experts.expert import SiteExpert

__all__ = ["ExpertRunConfig", "build_expert"]


class _ExpertSection(Protocol):
    @property
    def backbone(self) -> str: ...

    @property
    def out_channels(self) -> int: ...

    @property
    def params(self) -> Mapping[str, Any]: ...


class _DataSection(Protocol):
    @property
    def spatial_size(self) -> tuple[int, ...]: ...

    @property
    def channels(self) -> int: ...


class ExpertRunConfig(Protocol):
    """What :func:`build_expert` reads of a run's config: ``expert.backbone``,
    ``expert.out_channels``, ``expert.params``, ``data.spatial_size`` and ``data.channels``."""

    @property
    def expert(self) -> _ExpertSection: ...

    @property
    def data(self) -> _DataSection: ...


def build_expert(cfg: ExpertRunConfig, num_classes: int) -> SiteExpert:
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
