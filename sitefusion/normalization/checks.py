"""Checks of a normalizer's inputs: images and hyper-parameters.

Images must be channel-first, real-valued and finite (``ValueError`` naming the image);
hyper-parameters must be numbers of the documented range (:class:`~sitefusion.errors.ConfigError`
naming the normalizer, the parameter, the value and what was expected).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sitefusion.errors import ConfigError

__all__ = [
    "FloatArray",
    "as_image",
    "check_float",
    "check_floats",
    "check_int",
    "require_image_iterable",
]

FloatArray = npt.NDArray[np.float64]
"""Float64 numpy array (internal working precision)."""


def as_image(image: object, label: str = "image") -> FloatArray:
    """Validate one channel-first image and return it as float64 ``[C, H, W]`` / ``[C, D, H, W]``.

    Raises ``ValueError`` naming ``label`` when the array is not 3D/4D, is empty, is not
    real-valued numeric, or holds NaN / infinite values.
    """
    array = np.asarray(image)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise ValueError(f"{label}: expected a real-valued numeric array, got dtype {array.dtype}")
    if array.ndim not in (3, 4):
        raise ValueError(
            f"{label}: expected a channel-first array [C, H, W] or [C, D, H, W], "
            f"got shape {tuple(array.shape)}"
        )
    if array.size == 0:
        raise ValueError(f"{label}: empty array of shape {tuple(array.shape)}")
    values = array.astype(np.float64, copy=False)
    if not np.isfinite(values).all():
        raise ValueError(f"{label}: contains NaN or infinite values")
    return values


def require_image_iterable(images: object, what: str) -> None:
    """Refuse a single array where an iterable of images is expected (``ValueError``)."""
    # A bare [C, D, H, W] array would iterate over its channels and silently fit on them as
    # if they were images; demand an explicit iterable instead.
    if hasattr(images, "shape") and hasattr(images, "dtype"):
        raise ValueError(
            f"{what} expects an iterable of channel-first images (a list or generator of "
            f"[C, H, W] / [C, D, H, W] arrays), not one array of shape "
            f"{tuple(getattr(images, 'shape', ()))}; wrap a single image in a list, or use "
            "list(batch) for a stacked batch"
        )


# ------------------------------------------------------------------ hyper-parameter checks


def _cfg(owner: str, name: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{owner}: parameter {name!r} must be {expected}, got {value!r}")


def check_int(owner: str, name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise _cfg(owner, name, f"an integer >= {minimum}", value)
    return int(value)


def check_float(
    owner: str,
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
) -> float:
    """Return ``value`` as a finite float in ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    bracket = "(" if low_open else "["
    expected = f"a finite number in {bracket}{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _cfg(owner, name, expected, value)
    number = float(value)
    too_low = number <= low if low_open else number < low
    if not math.isfinite(number) or too_low or number > high:
        raise _cfg(owner, name, expected, value)
    return number


def check_floats(
    owner: str,
    name: str,
    value: object,
    *,
    length: int | None = None,
    min_length: int = 1,
    low: float = -math.inf,
    high: float = math.inf,
    positive: bool = False,
    increasing: bool = False,
) -> tuple[float, ...]:
    """Return ``value`` (a list/tuple of numbers, e.g. from YAML) as a tuple of floats.

    Checks the length (exactly ``length`` or at least ``min_length``), finiteness, the range
    ``[low, high]``, positivity and strict increase, raising :class:`ConfigError` naming
    ``name``.
    """
    parts = []
    if length is not None:
        parts.append(f"{length} numbers")
    else:
        parts.append(f"at least {min_length} numbers")
    if math.isfinite(low) or math.isfinite(high):
        parts.append(f"each in [{low}, {high}]")
    if positive:
        parts.append("each > 0")
    if increasing:
        parts.append("strictly increasing")
    expected = ", ".join(parts)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise _cfg(owner, name, expected, value)
    items = list(value)
    if (length is not None and len(items) != length) or len(items) < min_length:
        raise _cfg(owner, name, expected, value)
    numbers: list[float] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float | np.integer | np.floating):
            raise _cfg(owner, name, expected, value)
        number = float(item)
        if not math.isfinite(number) or number < low or number > high:
            raise _cfg(owner, name, expected, value)
        if positive and number <= 0:
            raise _cfg(owner, name, expected, value)
        numbers.append(number)
    if increasing and any(b <= a for a, b in itertools.pairwise(numbers)):
        raise _cfg(owner, name, expected, value)
    return tuple(numbers)
