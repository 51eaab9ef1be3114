"""The value every reader returns: a channel-first float32 array plus JSON-safe metadata."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.errors import ImageReadError

__all__ = ["ImageData", "build_image"]


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: compare .array explicitly
class ImageData:
    """One image as read from disk.

    Attributes:
        array: float32, channel-first: ``[C, H, W]`` for 2D images, ``[C, D, H, W]`` for
            volumes (depth = slices or frames). Grey images have ``C == 1``, colour ``C == 3``,
            NIfTI time series ``C == T``.
        metadata: JSON-safe description (values are ``str``, ``int``, ``float``, ``bool`` or
            lists of those). Keys are set only when known: ``path``, ``format``, ``spacing``
            (one float per spatial axis, in the array's spatial order, e.g. ``[D, H, W]``),
            ``modality``, ``photometric_interpretation``, DICOM UIDs and equipment fields,
            ``num_frames``. Patient identifiers are never stored.

    Raises:
        ValueError: if the array is not float32, not 3D/4D, or the metadata is not JSON-safe
            (these are programming errors; readers report bad files as ``ImageReadError``).
    """

    array: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray) or self.array.dtype != np.float32:
            raise ValueError(
                f"ImageData.array must be a float32 numpy array, got "
                f"{type(self.array).__name__} of dtype {getattr(self.array, 'dtype', None)}"
            )
        if self.array.ndim not in (3, 4):
            raise ValueError(
                f"ImageData.array must be [C, H, W] or [C, D, H, W], got shape {self.array.shape}"
            )
        for key, value in self.metadata.items():
            if not isinstance(key, str) or not _is_json_safe(value):
                raise ValueError(
                    f"ImageData.metadata[{key!r}] is not JSON-safe: {type(value).__name__}"
                )

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes: 2 for ``[C, H, W]``, 3 for ``[C, D, H, W]``."""
        return int(self.array.ndim - 1)

    @property
    def channels(self) -> int:
        """Number of channels ``C`` (the first axis)."""
        return int(self.array.shape[0])


def _is_json_safe(value: object) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json_safe(v) for v in value)
    return False


def build_image(path: Path, array: np.ndarray, metadata: Mapping[str, Any]) -> ImageData:
    """Finish a reader's work: cast to float32, reject non-finite values, drop ``None`` entries.

    Args:
        path: the file or folder read (named in errors).
        array: channel-first ``[C, H, W]`` or ``[C, D, H, W]``.
        metadata: JSON-safe values; ``None`` means "unknown" and is dropped.

    Raises:
        ImageReadError: the array holds NaN/inf or has another number of axes.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is rejected below
        out = np.ascontiguousarray(array, dtype=np.float32)
    if out.ndim not in (3, 4):
        raise ImageReadError(path, f"unsupported dimensionality: array shape {list(out.shape)}")
    if out.size == 0:
        raise ImageReadError(path, f"image is empty: array shape {list(out.shape)}")
    # Integers are always finite as float32 (even uint64's largest): the check, a mask the
    # size of the image, runs for float sources only.
    integer_source = np.asarray(array).dtype.kind in "biu"
    if not integer_source and not np.isfinite(out).all():
        raise ImageReadError(path, "image contains NaN or infinite values")
    clean = {k: v for k, v in metadata.items() if v is not None}
    return ImageData(array=out, metadata=clean)
