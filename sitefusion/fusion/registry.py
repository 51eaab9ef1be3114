"""Fusion modes by name: :data:`FUSION_MODES` and :func:`make_fusion`."""

from __future__ import annotations

from typing import Any

from sitefusion.errors import UnknownChoiceError
from sitefusion.fusion.attention import AttentionFusion
from sitefusion.fusion.average_attention import AverageAttentionFusion
from sitefusion.fusion.base import FusionModule
from sitefusion.fusion.concat import ConcatFusion

__all__ = ["FUSION_CLASSES", "FUSION_MODES", "make_fusion"]

FUSION_CLASSES: dict[str, type[FusionModule]] = {
    cls.mode: cls for cls in (AverageAttentionFusion, ConcatFusion, AttentionFusion)
}
"""Fusion classes by mode; the first, ``average_attention``, is the product default."""

FUSION_MODES: tuple[str, ...] = tuple(FUSION_CLASSES)
"""Valid fusion modes, as in ``sitefusion.config.FusionMode``."""


def make_fusion(mode: str, **kwargs: Any) -> FusionModule:
    """Build the fusion head ``mode`` with the constructor arguments ``kwargs``.

    ``kwargs``: ``num_experts``, ``feature_dim``, ``num_classes``, and optionally ``hidden`` and
    ``dropout`` (see :class:`~sitefusion.fusion.base.FusionModule`). ``make_fusion(**m.describe())``
    rebuilds an untrained copy of ``m``.

    Raises:
        UnknownChoiceError: ``mode`` is not one of :data:`FUSION_MODES`.
        ConfigError: invalid constructor arguments.
    """
    try:
        cls = FUSION_CLASSES[mode]
    except (KeyError, TypeError):
        raise UnknownChoiceError("fusion mode", mode, FUSION_MODES) from None
    return cls(**kwargs)
