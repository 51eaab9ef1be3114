"""Registry of MONAI backbones that map an image to a pooled feature vector.

Every backbone is built by :func:`build_backbone` and maps ``[B, C_in, *spatial]`` to
``[B, out_channels]``: the network's own final linear layer (``num_classes`` / ``out_channels`` in
MONAI's terms) is used as the projection to the feature size ``D``. The returned module *is* the
MONAI network, so its ``state_dict`` keys are MONAI's own and a checkpoint saved from the same
MONAI class loads into it.

Weights are never downloaded: a ``pretrained`` argument is refused; use
:func:`sitefusion.experts.load_pretrained` with a local safetensors file instead.

Backbones (``params`` that may override the defaults in brackets):

``densenet121``
    ``monai.networks.nets.DenseNet121`` [``dropout`` (dense-layer dropout, 0.0), ``bn_size``,
    ``act``, ``norm``]. Needs at least 29 voxels along every spatial axis.
``resnet10`` / ``resnet18``
    ``monai.networks.nets.ResNet`` with basic blocks ``[1, 1, 1, 1]`` / ``[2, 2, 2, 2]`` and
    64-128-256-512 filters, as ``monai.networks.nets.resnet10/18`` (MONAI defaults: 7-wide stem,
    stride 1, max-pool) [``dropout`` (before the final linear layer, 0.0), ``conv1_t_size``,
    ``conv1_t_stride``, ``no_max_pool``, ``shortcut_type``, ``widen_factor``,
    ``bias_downsample``, ``act``, ``norm``].
``efficientnet-b0``
    ``monai.networks.nets.EfficientNetBN("efficientnet-b0", pretrained=False)`` [``dropout``
    (before the final linear layer, 0.2), ``norm``]. Needs at least 32 voxels along every axis.
``efficientnet-lite0``
    :class:`sitefusion.experts.lite0.EfficientNetLite0`: MONAI's ``EfficientNet`` with B0's
    blocks without squeeze-and-excitation and ReLU6 for swish: 3.37 M trainable parameters
    before ``_fc`` (the ImageNet file, 4.69 M tensor elements, adds the 1000-class classifier).
    Its ``_fc`` (1280 pooled features -> D) is the projection to the feature size, as for the
    other backbones, so ``expert.out_channels`` still sets D; the ImageNet weights
    (``expert.pretrained: imagenet``) fill everything but ``_fc``. [``dropout`` (on the 1280
    pooled features, 0.2), ``input_scaling`` (``standardized`` for zscore/colour normalizer
    output, or ``unit`` for [0, 1] output; see :mod:`sitefusion.experts.lite0`)]. The whole
    network is fine-tuned (docs/benchmarks.md: a frozen ImageNet trunk lost on validation).
    Needs at least 32 pixels along every axis.
``compact``
    A small ``monai.networks.nets.ResNet`` for CPU training: basic blocks ``[1, 1, 1, 1]`` with
    16-32-64-128 filters, a 3-wide stride-2 stem and no max-pool (so a 32 x 32 image still has
    2 x 2 positions before pooling); about 0.32 M parameters at 3 input channels. Measured
    forward + backward at batch 64, 3 x 64 x 64, 2 torch threads: about 1300-1600 images/s
    (a DenseNet(16, 12, (3, 6, 6)) ran at about 1200-1400 images/s with fewer parameters).
    [``dropout`` and every ``resnet`` parameter, plus ``layers`` and ``block_inplanes``].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, EfficientNetBN, ResNet, ResNetBlock
from torch import nn

from sitefusion.errors import ConfigError, UnknownChoiceError
from sitefusion.experts.lite0 import EfficientNetLite0

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "DropoutLinear",
    "backbone_spec",
    "build_backbone",
    "check_backbone_params",
]

# Arguments the registry sets itself; passing them in ``params`` is always a mistake.
_RESERVED = frozenset(
    {
        "spatial_dims",
        "in_channels",
        "n_input_channels",
        "out_channels",
        "num_classes",
        "feed_forward",
        "model_name",
        "pretrained",
        "progress",
        "adv_prop",
    }
)


class DropoutLinear(nn.Linear):
    """``nn.Linear`` that applies dropout to its input ``[B, in_features]`` first.

    It keeps ``weight`` and ``bias`` as its only parameters, so swapping it in for a MONAI
    network's final ``nn.Linear`` leaves the ``state_dict`` keys unchanged.
    """

    def __init__(self, in_features: int, out_features: int, p: float, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_features]`` -> ``[B, out_features]``."""
        return super().forward(F.dropout(x, self.p, self.training))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: its builder, default parameters and smallest valid input.

    ``build(spatial_dims, in_channels, out_channels, params)`` receives the defaults already
    merged with the caller's overrides. ``min_size`` is the smallest size along every spatial axis
    for which the network's forward pass works (its down-sampling leaves at least one position).
    """

    name: str
    build: Callable[[int, int, int, dict[str, Any]], nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    allowed: frozenset[str] = frozenset()
    min_size: int = 1
    description: str = ""


def _dropout_value(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"backbone {name!r}: parameter 'dropout' is {value!r}; expected [0, 1)")
    return float(value)


def _with_dropout_fc(net: nn.Module, attr: str, p: float) -> nn.Module:
    """Replace ``net.<attr>`` (an ``nn.Linear``) by a :class:`DropoutLinear` with the same init."""
    old = getattr(net, attr)
    new = DropoutLinear(old.in_features, old.out_features, p, bias=old.bias is not None)
    new.load_state_dict(old.state_dict())
    setattr(net, attr, new)
    return net


def _resnet_builder(
    layers: list[int], block_inplanes: list[int], name: str
) -> Callable[[int, int, int, dict[str, Any]], nn.Module]:
    def build(
        spatial_dims: int, in_channels: int, out_channels: int, p: dict[str, Any]
    ) -> nn.Module:
        params = dict(p)
        dropout = _dropout_value(name, params.pop("dropout", 0.0))
        net = ResNet(
            block=ResNetBlock,
            layers=list(params.pop("layers", layers)),
            block_inplanes=list(params.pop("block_inplanes", block_inplanes)),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            num_classes=out_channels,
            feed_forward=True,
            **params,
        )
        return _with_dropout_fc(net, "fc", dropout) if dropout > 0 else net

    return build


def _densenet121(
    spatial_dims: int, in_channels: int, out_channels: int, p: dict[str, Any]
) -> nn.Module:
    params = dict(p)
    dropout = _dropout_value("densenet121", params.pop("dropout", 0.0))
    return DenseNet121(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        pretrained=False,
        dropout_prob=dropout,
        **params,
    )


def _efficientnet_b0(
    spatial_dims: int, in_channels: int, out_channels: int, p: dict[str, Any]
) -> nn.Module:
    params = dict(p)
    dropout = _dropout_value("efficientnet-b0", params.pop("dropout", 0.2))
    net = EfficientNetBN(
        "efficientnet-b0",
        pretrained=False,
        progress=False,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=out_channels,
        **params,
    )
    net._dropout.p = dropout  # EfficientNetBN does not expose its head dropout as an argument
    return net


def _efficientnet_lite0(
    spatial_dims: int, in_channels: int, out_channels: int, p: dict[str, Any]
) -> nn.Module:
    params = dict(p)
    dropout = _dropout_value("efficientnet-lite0", params.pop("dropout", 0.2))
    return EfficientNetLite0(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=out_channels,
        dropout=dropout,
        **params,
    )


_RESNET_PARAMS = frozenset(
    {
        "dropout",
        "conv1_t_size",
        "conv1_t_stride",
        "no_max_pool",
        "shortcut_type",
        "widen_factor",
        "bias_downsample",
        "act",
        "norm",
    }
)

_SPECS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="compact",
            build=_resnet_builder([1, 1, 1, 1], [16, 32, 64, 128], "compact"),
            defaults={"conv1_t_size": 3, "conv1_t_stride": 2, "no_max_pool": True},
            allowed=_RESNET_PARAMS | {"layers", "block_inplanes"},
            min_size=1,
            description="small MONAI ResNet (16-32-64-128 filters) for CPU training",
        ),
        BackboneSpec(
            name="densenet121",
            build=_densenet121,
            allowed=frozenset({"dropout", "bn_size", "act", "norm"}),
            min_size=29,
            description="MONAI DenseNet121",
        ),
        BackboneSpec(
            name="efficientnet-b0",
            build=_efficientnet_b0,
            allowed=frozenset({"dropout", "norm"}),
            min_size=32,
            description="MONAI EfficientNetBN('efficientnet-b0'), random initialisation",
        ),
        BackboneSpec(
            name="efficientnet-lite0",
            build=_efficientnet_lite0,
            allowed=frozenset({"dropout", "input_scaling"}),
            min_size=32,
            description="MONAI EfficientNet as EfficientNet-Lite0 (ImageNet weights optional)",
        ),
        BackboneSpec(
            name="resnet10",
            build=_resnet_builder([1, 1, 1, 1], [64, 128, 256, 512], "resnet10"),
            allowed=_RESNET_PARAMS,
            min_size=1,
            description="MONAI ResNet-10",
        ),
        BackboneSpec(
            name="resnet18",
            build=_resnet_builder([2, 2, 2, 2], [64, 128, 256, 512], "resnet18"),
            allowed=_RESNET_PARAMS,
            min_size=1,
            description="MONAI ResNet-18",
        ),
    )
}

BACKBONES: tuple[str, ...] = tuple(sorted(_SPECS))
"""Names accepted by :func:`build_backbone`."""


def backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` registered under ``name``; unknown names raise
    :class:`~sitefusion.errors.UnknownChoiceError` listing the valid ones."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise UnknownChoiceError("backbone", name, BACKBONES) from None


def _positive_int(name: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"backbone {name!r}: {what} is {value!r}; expected a positive integer")
    return value


def check_backbone_params(name: str, params: Mapping[str, Any]) -> None:
    """Check that ``params`` only holds parameters backbone ``name`` accepts (names, not values).

    Raises:
        UnknownChoiceError: unknown backbone or parameter name.
        ConfigError: a parameter the registry sets itself (``pretrained``, ``spatial_dims``, ...).
    """
    spec = backbone_spec(name)
    for key in params:
        if key in ("pretrained", "progress", "adv_prop"):
            raise ConfigError(
                f"backbone {name!r}: parameter {key!r} is not accepted; weights are never "
                "downloaded, load a local safetensors file with load_pretrained(...) instead"
            )
        if key in _RESERVED:
            raise ConfigError(
                f"backbone {name!r}: parameter {key!r} is set from the expert's own arguments "
                "(spatial_dims, in_channels, feature size); remove it from params"
            )
        if key not in spec.allowed:
            raise UnknownChoiceError(f"{name} parameter", key, spec.allowed)


def build_backbone(
    name: str, spatial_dims: int, in_channels: int, out_channels: int, **params: Any
) -> nn.Module:
    """Build the MONAI backbone ``name`` with freshly initialised (never downloaded) weights.

    Args:
        name: one of :data:`BACKBONES`.
        spatial_dims: 2 or 3.
        in_channels: image channels ``C_in``.
        out_channels: pooled feature size ``D`` (the network's final linear layer).
        **params: overrides of the backbone's defaults (see the module docstring), for example
            ``dropout=0.2``.

    Returns:
        A module mapping ``[B, C_in, *spatial]`` to ``[B, D]``.

    Raises:
        UnknownChoiceError: unknown backbone name or parameter.
        ConfigError: invalid dimensions, channels, feature size or parameter value.
    """
    spec = backbone_spec(name)
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ConfigError(f"backbone {name!r}: spatial_dims is {spatial_dims!r}; expected 2 or 3")
    _positive_int(name, "in_channels", in_channels)
    _positive_int(name, "out_channels", out_channels)
    check_backbone_params(name, params)
    merged = {**spec.defaults, **params}
    try:
        return spec.build(spatial_dims, in_channels, out_channels, merged)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(
            f"backbone {name!r}: invalid parameters {params!r} ({str(err).strip()})"
        ) from err
