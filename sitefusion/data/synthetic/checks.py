"""Checks of the synthetic generator's arguments, shared by its modules.

Every refusal is a :class:`~sitefusion.errors.ConfigError` that names the argument, the value
and what was expected.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from sitefusion.errors import ConfigError

__all__ = ["FloatArray", "check_arguments", "check_int"]

FloatArray = npt.NDArray[np.float64]
"""Float64 numpy array (the generator's working precision)."""


def check_int(name: str, value: object, minimum: int) -> None:
    """Refuse ``value`` unless it is an integer (not a bool) of at least ``minimum``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(
            f"synthetic data: {name} is {value!r}; expected an integer of at least {minimum}"
        )


def check_arguments(
    sites: int,
    images_per_site: int,
    classes: int,
    dims: int,
    size: int,
    channels: int,
    images_per_group: int,
) -> None:
    """Refuse counts, sizes, dimensions and channel counts the generator cannot make."""
    check_int("sites", sites, 1)
    check_int("images_per_site", images_per_site, 1)
    check_int("classes", classes, 2)
    check_int("size", size, 8)
    check_int("images_per_group", images_per_group, 1)
    if dims not in (2, 3):
        raise ConfigError(f"synthetic data: dims is {dims!r}; expected 2 or 3")
    valid_channels = (1, 3) if dims == 2 else (1,)
    if channels not in valid_channels:
        expected = "1 (grey) or 3 (RGB)" if dims == 2 else "1 (3D volumes are single-channel)"
        raise ConfigError(
            f"synthetic data: channels is {channels!r} for {dims}D; expected {expected}"
        )
