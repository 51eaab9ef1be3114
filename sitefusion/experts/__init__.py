"""Site experts: MONAI backbones that embed an image into ``[B, D]``, with a local linear head.

- :mod:`~sitefusion.experts.backbones`: registry of MONAI backbones (:data:`BACKBONES`).
- :mod:`~sitefusion.experts.expert`: :class:`SiteExpert` and :func:`load_pretrained`.
- :mod:`~sitefusion.experts.build`: :func:`build_expert` (a run's network from its config).
- :mod:`~sitefusion.experts.lite0`: :class:`EfficientNetLite0` (MONAI) and its ImageNet weights.
- :mod:`~sitefusion.experts.pretrained`: :func:`initial_weights` (weights used + source record).
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
from sitefusion.experts.build import ExpertRunConfig, build_expert
from sitefusion.experts.expert import PretrainedLoad, SiteExpert, load_pretrained
from sitefusion.experts.lite0 import EfficientNetLite0
from sitefusion.experts.pretrained import (
    IMAGENET,
    InitialWeights,
    check_imagenet_geometry,
    initial_weights,
)

__all__ = [
    "BACKBONES",
    "IMAGENET",
    "BackboneSpec",
    "DropoutLinear",
    "EfficientNetLite0",
    "ExpertRunConfig",
    "InitialWeights",
    "PretrainedLoad",
    "SiteExpert",
    "StateDictMismatchError",
    "average_state_dicts",
    "backbone_spec",
    "build_backbone",
    "build_expert",
    "check_backbone_params",
    "check_imagenet_geometry",
    "initial_weights",
    "load_pretrained",
]
