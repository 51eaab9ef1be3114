"""A site's expert: a MONAI backbone that embeds an image, plus a linear head for local use.

``SiteExpert.embed`` gives the pooled feature vector ``[B, D]`` that the fusion consumes;
``SiteExpert.forward`` gives the expert's own class logits ``[B, num_classes]``, used to train the
expert on its site and as the local prediction.

Design choice: the head is ``nn.Linear(D, num_classes)`` applied directly to the embedding, with no
nonlinearity and no dropout in between. Every registered backbone already ends in its own linear
layer (pooled features -> D), so a nonlinearity here would turn the local classifier into a small
MLP whose decision is *not* a linear function of the embedding; the fusion heads read the
embeddings linearly, so keeping the head linear means each expert's own decision stays exactly
representable by what the fusion sees. Regularisation goes through the backbone's ``dropout``
parameter (dropout on the pooled features, before the projection to D).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from sitefusion.errors import ArtifactError, ConfigError
from sitefusion.experts.backbones import backbone_spec, build_backbone, check_backbone_params

__all__ = ["PretrainedLoad", "SiteExpert", "load_pretrained"]

logger = logging.getLogger(__name__)


def _json_safe(value: Any, where: str) -> Any:
    """A JSON-serialisable copy of ``value`` (tuples become lists); anything else is an error."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"expert params: {where} is {value!r}; expected a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"expert params: key {k!r} in {where} is not a string")
            out[k] = _json_safe(v, f"{where}.{k}")
        return out
    raise ConfigError(
        f"expert params: {where} is {value!r} ({type(value).__name__}); expected JSON data "
        "(numbers, strings, booleans, lists, mappings)"
    )


def _from_json(value: Any) -> Any:
    """Lists back to tuples, as MONAI expects for ``act``/``norm`` specifications."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 2-D batch ``[B, C, H, W]`` in channels-last memory order (same values and shape).

    oneDNN's CPU convolutions run about 1.6x faster on channels-last inputs, forward and
    backward, for both ``compact`` and EfficientNet-Lite0 (docs/benchmarks.md, "Memory
    format"); the weights keep their default layout, so checkpoints are unchanged.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"SiteExpert: {what} is {value!r}; expected a positive integer")
    return value


class SiteExpert(nn.Module):
    """One site's expert: MONAI backbone ``[B, C, *S] -> [B, D]`` and a linear head ``-> [B, K]``.

    Args:
        backbone: a name from :data:`sitefusion.experts.BACKBONES`.
        spatial_dims: 2 or 3.
        in_channels: image channels ``C``.
        feature_dim: pooled feature size ``D`` (at least 2).
        num_classes: number of classes ``K`` (at least 2).
        params: backbone parameter overrides (JSON data, for example ``{"dropout": 0.2}``).

    Construction draws from torch's global generator: call ``torch.manual_seed`` first for
    reproducible initial weights.
    """

    def __init__(
        self,
        backbone: str,
        spatial_dims: int,
        in_channels: int,
        feature_dim: int,
        num_classes: int,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        spec = backbone_spec(backbone)
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise ConfigError(f"SiteExpert: spatial_dims is {spatial_dims!r}; expected 2 or 3")
        _positive_int("in_channels", in_channels)
        if _positive_int("feature_dim", feature_dim) < 2:
            raise ConfigError(f"SiteExpert: feature_dim is {feature_dim}; expected at least 2")
        if _positive_int("num_classes", num_classes) < 2:
            raise ConfigError(f"SiteExpert: num_classes is {num_classes}; expected at least 2")
        if params is not None and not isinstance(params, Mapping):
            raise ConfigError(f"SiteExpert: params is {params!r}; expected a mapping or None")
        self.backbone_name = spec.name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.params: dict[str, Any] = _json_safe(dict(params or {}), "params")
        check_backbone_params(spec.name, self.params)
        self.min_size = spec.min_size
        self.backbone = build_backbone(
            spec.name, spatial_dims, in_channels, feature_dim, **_from_json(self.params)
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SiteExpert({self.backbone_name}): input has shape {tuple(x.shape)}; expected "
                f"[B, {self.in_channels}, {', '.join(['S'] * self.spatial_dims)}]"
            )
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(
                f"SiteExpert({self.backbone_name}): input spatial size {tuple(x.shape[2:])} is too "
                f"small; this backbone needs at least {self.min_size} along every axis"
            )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: ``[B, C, *S]`` -> ``[B, D]``."""
        self._check_input(x)
        out: torch.Tensor = self.backbone(_channels_last(x))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Local class logits: ``[B, C, *S]`` -> ``[B, num_classes]`` (``head(embed(x))``)."""
        out: torch.Tensor = self.head(self.embed(x))
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-safe constructor arguments; ``SiteExpert.from_description(d)`` rebuilds it."""
        return {
            "backbone": self.backbone_name,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "params": json.loads(json.dumps(self.params)),
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> SiteExpert:
        """Rebuild an (untrained) expert from :meth:`describe`'s output."""
        keys = {"backbone", "spatial_dims", "in_channels", "feature_dim", "num_classes", "params"}
        if not isinstance(description, Mapping) or set(description) != keys:
            got = sorted(description) if isinstance(description, Mapping) else description
            raise ConfigError(f"expert description has keys {got!r}; expected {sorted(keys)}")
        return cls(**description)


class PretrainedLoad(NamedTuple):
    """What :func:`load_pretrained` loaded: tensor counts and the keys it could not use."""

    path: str
    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    skipped: tuple[str, ...]


def load_pretrained(
    expert: SiteExpert, path: str | Path, *, skip_mismatched: bool = False
) -> PretrainedLoad:
    """Load a local safetensors file into ``expert.backbone`` (the head is left as it is).

    Keys are the backbone's own (MONAI) ``state_dict`` keys; a file saved from a whole
    :class:`SiteExpert` (keys ``backbone.*`` and ``head.*``) also works, its ``head.*`` tensors
    being reported as unexpected. Missing and unexpected keys are allowed and reported (counts are
    logged). A tensor whose shape differs from the backbone's (for example a final layer with
    another feature size) is an error unless ``skip_mismatched`` is true, in which case it is left
    out and reported in ``skipped``.

    Raises:
        ArtifactError: the file is missing or unreadable, no tensor matches the backbone, or
            shapes mismatch (without ``skip_mismatched``).
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: pretrained weights file not found")
    try:
        tensors = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{p}: cannot read as safetensors ({err})") from err
    # A whole-expert file names backbone tensors "backbone.<key>"; map them to backbone keys.
    prefixed = any(k.startswith("backbone.") for k in tensors)
    target = {k: (k.removeprefix("backbone.") if prefixed else k) for k in tensors}
    own = expert.backbone.state_dict()
    # With a prefix, keys without it (a head) are not the backbone's even if a name collides.
    unexpected = {k for k, t in target.items() if t not in own or (prefixed and t == k)}
    candidates = {k: t for k, t in target.items() if k not in unexpected}
    mismatched = sorted(
        k for k, t in candidates.items() if tuple(tensors[k].shape) != tuple(own[t].shape)
    )
    skipped = set(mismatched)
    if mismatched and not skip_mismatched:
        details = ", ".join(
            f"{k} {tuple(tensors[k].shape)} vs {tuple(own[target[k]].shape)}"
            for k in mismatched[:5]
        )
        raise ArtifactError(
            f"{p}: {len(mismatched)} tensor(s) have another shape than the "
            f"{expert.backbone_name} backbone's: {details}"
            f"{' ...' if len(mismatched) > 5 else ''}; pass skip_mismatched=True to leave them out"
        )
    usable = {t: tensors[k] for k, t in candidates.items() if k not in skipped}
    if not usable:
        raise ArtifactError(
            f"{p}: none of its {len(tensors)} tensors matches a parameter of the "
            f"{expert.backbone_name} backbone (is it another architecture?)"
        )
    with torch.no_grad():
        result = expert.backbone.load_state_dict(usable, strict=False)
    report = PretrainedLoad(
        path=str(p),
        loaded=len(usable),
        missing=tuple(sorted(result.missing_keys)),
        unexpected=tuple(sorted(unexpected)),
        skipped=tuple(mismatched),
    )
    logger.info(
        "loaded %d pretrained tensors from %s (%d missing, %d unexpected, %d skipped)",
        report.loaded,
        p,
        len(report.missing),
        len(report.unexpected),
        len(report.skipped),
    )
    return report
