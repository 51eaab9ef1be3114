"""Site experts: MONAI backbones that embed an image into ``[B, D]``, with a local linear head.

- :mod:`~sitefusion.experts.backbones`: registry of MONAI backbones (:data:`BACKBONES`).
- :mod:`~sitefusion.experts.expert`: :class:`SiteExpert` and :func:`load_pretrained`.
- :mod:`~sitefusion.experts.build`: :func:`build_expert` (a run's network from its config).
- :mod:`~sitefusion.experts.averaging`: :func:`average_state_dicts` (one-shot FedAvg).
"""

from sitefusion.experts.averaging import StateDictMismatchError, average_state_dicts
from sitefusion.experts.backbones import (
    BACKBONES,
    BackboneSpec,
    DropoutLinear,
    backbone_spec,
    build_backbone,
    check_backbone_params,
)
from sitefusion.experts.build import build_expert
from sitefusion.experts.expert import PretrainedLoad, SiteExpert, load_pretrained

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "DropoutLinear",
    "PretrainedLoad",
    "SiteExpert",
    "StateDictMismatchError",
    "average_state_dicts",
    "backbone_spec",
    "build_backbone",
    "build_expert",
    "check_backbone_params",
    "load_pretrained",
]
