"""The schema's rules that one field's type and bounds cannot say: the lower layers' own checks
(backbone names and parameters, normalizer parameters) and the rules across sections (ImageNet
weights, experts fine-tuned from FedAvg).

The lower layers keep their rules (only the backbone registry knows which parameters a MONAI
network takes; only a normalizer knows its valid values); the schema is the one place that calls
them, so a config is refused the same way wherever it is built. Each rule raises an error of
:mod:`sitefusion.config.messages`, which the loaders turn into one line naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sitefusion.config.messages import (
    choice_error,
    field_error,
    field_message,
    sentence_error,
    unknown_error,
)
from sitefusion.errors import SiteFusionError, UnknownChoiceError, did_you_mean

if TYPE_CHECKING:
    from sitefusion.config.schema import Config

__all__ = [
    "PRETRAINED_IMAGENET",
    "check_backbone",
    "check_imagenet",
    "check_normalizer",
    "check_pretrained",
    "check_start",
]

PRETRAINED_IMAGENET = "imagenet"

# The ``input_scaling`` of efficientnet-lite0 that suits each normalizer's output range
# (sitefusion.experts.lite0): about zero mean and unit variance, or [0, 1].
_LITE0_SCALING = {"zscore": "standardized", "colour": "standardized", "percentile": "unit"}


def check_pretrained(pretrained: str | None) -> None:
    """``expert.pretrained``: null, ``imagenet`` or a ``.safetensors`` path (not yet opened:
    :func:`~sitefusion.config.check_paths` does that for a config that starts a run)."""
    if pretrained not in (None, PRETRAINED_IMAGENET) and not str(pretrained).endswith(
        ".safetensors"
    ):
        raise field_error(
            "pretrained",
            pretrained,
            f"null, {PRETRAINED_IMAGENET!r} or the path of a .safetensors file"
            f"{did_you_mean(str(pretrained), [PRETRAINED_IMAGENET])}",
        )


def check_backbone(backbone: str, params: Mapping[str, Any]) -> None:
    """``expert.backbone`` is registered and ``expert.params`` holds only names it accepts."""
    # lazy: the registry imports torch and MONAI; a config is read without them (--help, tests)
    from sitefusion.experts.backbones import BACKBONES, check_backbone_params

    if backbone not in BACKBONES:
        raise choice_error("backbone", backbone, BACKBONES)
    try:
        check_backbone_params(backbone, params)
    except UnknownChoiceError as err:
        raise unknown_error(
            f"params.{err.value}", err.choices, f"parameters of backbone {backbone!r}"
        ) from err
    except (SiteFusionError, TypeError, ValueError) as err:  # a value it cannot take
        raise field_message("params", str(err)) from err


def check_normalizer(kind: str, params: Mapping[str, Any]) -> None:
    """``normalization.params`` are names and values a ``kind`` normalizer accepts."""
    # lazy: the registry imports every normalizer (numpy, scikit-image); keeps --help fast
    from sitefusion.normalization.registry import make_normalizer

    try:
        make_normalizer(kind, **params)
    except UnknownChoiceError as err:
        raise unknown_error(
            f"params.{err.value}", err.choices, f"parameters of {kind!r} normalizers"
        ) from err
    except (SiteFusionError, TypeError, ValueError) as err:  # a value it cannot take
        raise field_message("params", str(err)) from err


def check_imagenet(cfg: Config) -> None:
    """``expert.pretrained: imagenet`` needs Lite0, 2-D RGB images and a matching input scaling."""
    if cfg.expert.pretrained != PRETRAINED_IMAGENET:
        return
    where = "expert.pretrained is 'imagenet'"
    if cfg.expert.backbone != "efficientnet-lite0":
        raise sentence_error(
            f"{where}, which exists for backbone 'efficientnet-lite0' only; expert.backbone is "
            f"{cfg.expert.backbone!r}"
        )
    if len(cfg.data.spatial_size) != 2 or cfg.data.channels != 3:
        raise sentence_error(
            f"{where}, a 2-D RGB network; data.spatial_size is {list(cfg.data.spatial_size)} and "
            f"data.channels is {cfg.data.channels}: expected 2 sizes and 3 channels (or train "
            "from scratch with expert.pretrained: null)"
        )
    kind = cfg.normalization.kind
    scaling = cfg.expert.params.get("input_scaling", "standardized")
    rescaled = cfg.normalization.params.get("rescale", True) is True
    expected = _LITE0_SCALING.get(kind, "unit" if rescaled else None)
    if expected is None:
        raise sentence_error(
            f"{where}; normalization 'histogram' with rescale: false maps intensities onto its "
            "standard range (0..100 by default), which no input scaling of the pretrained "
            "network expects: set normalization.params.rescale: true"
        )
    if scaling != expected:
        raise sentence_error(
            f"{where}; normalization {kind!r} needs expert.params.input_scaling {expected!r} "
            f"(got {scaling!r}): 'standardized' for zero-mean unit-variance output (zscore, "
            "colour), 'unit' for [0, 1] output (percentile, histogram)"
        )


def check_start(cfg: Config) -> None:
    """``expert.start: fedavg`` needs the FedAvg model and a fusion that learns on unseen images."""
    if cfg.expert.start != "fedavg":
        return
    if not cfg.baselines.fedavg:
        raise sentence_error(
            "field 'expert.start' is 'fedavg', which fine-tunes every expert from the "
            "FedAvg model; set baselines.fedavg: true (it trains that model), or expert.start: "
            "initial"
        )
    if cfg.fusion.cross_fit:
        raise sentence_error(
            "field 'fusion.cross_fit' is true, but with expert.start 'fedavg' every "
            "expert has learned from every site's training images (through the FedAvg model), so "
            "cross-fitted rows would show the fusion features of images its experts trained on; "
            "set fusion.cross_fit: false"
        )
