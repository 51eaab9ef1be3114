"""The synthetic multi-site data set in memory, in the value scale of its files.

What :func:`make_synthetic_arrays` returns is exactly what the files hold:

* 2D grey (``channels=1``): 16-bit PNG, value ``round(y * 65535)`` (:data:`PNG16_MAX`).
* 2D RGB (``channels=3``): 8-bit RGB PNG, value ``round(y * 255)`` per channel
  (:data:`PNG8_MAX`).
* 3D (``channels=1``): NIfTI ``.nii.gz``, float32 value ``y * 1000`` (:data:`NIFTI_SCALE`,
  arbitrary MR-like units), identity affine (1 mm voxels), array axes written in order.

``y`` is a site's signal (:mod:`~sitefusion.data.synthetic.acquisition`) of the shared content
(:mod:`~sitefusion.data.synthetic.shapes`), for the class mix of each site
(:mod:`~sitefusion.data.synthetic.mix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from sitefusion.data.synthetic.acquisition import acquire, site_acquisitions
from sitefusion.data.synthetic.checks import FloatArray, check_arguments
from sitefusion.data.synthetic.mix import (
    DEFAULT_CLASS_SKEW,
    default_site_names,
    group_labels,
    site_class_mix,
    synthetic_class_names,
)
from sitefusion.data.synthetic.shapes import draw_group, render_group_image
from sitefusion.errors import ConfigError

__all__ = ["NIFTI_SCALE", "PNG8_MAX", "PNG16_MAX", "SyntheticArrays", "make_synthetic_arrays"]

PNG16_MAX = 65535
"""Full scale of 2D grey images: a 16-bit PNG value of ``y * PNG16_MAX``."""
PNG8_MAX = 255
"""Full scale of 2D RGB images: an 8-bit PNG value of ``y * PNG8_MAX`` per channel."""
NIFTI_SCALE = 1000.0
"""Full scale of 3D volumes: a float32 NIfTI value of ``y * NIFTI_SCALE``."""

# Random streams of the content: default_rng([seed, stream, site]); the acquisitions' stream (1)
# is in sitefusion.data.synthetic.acquisition.
_STREAM_CLASS_ORDER = 2
_STREAM_CONTENT = 3


class SyntheticArrays(NamedTuple):
    """In-memory synthetic data set, one entry per image (site-major, groups consecutive).

    Attributes:
        images: channel-first float32 arrays ``[C, H, W]`` (2D) or ``[C, D, H, W]`` (3D), in the
            on-disk value scale (see the module docstring).
        labels: class names (``class_0``, ...).
        sites: site names.
        groups: group (patient/lesion) ids, unique across sites.
    """

    images: list[npt.NDArray[np.float32]]
    labels: list[str]
    sites: list[str]
    groups: list[str]


def _resolve_site_names(sites: int, site_names: Sequence[str] | None) -> list[str]:
    if site_names is None:
        return default_site_names(sites)
    names = [str(n) for n in site_names]
    if len(names) != sites:
        raise ConfigError(
            f"synthetic data: site_names has {len(names)} names {names!r}; expected {sites} "
            "(one per site)"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"synthetic data: site_names {names!r} has duplicates; expected unique")
    for name in names:
        if not name or name in (".", "..") or not all(c.isalnum() or c in "_-." for c in name):
            raise ConfigError(
                f"synthetic data: site name {name!r} is not usable as a folder name; expected "
                "letters, digits, '_', '-' or '.'"
            )
    return names


def _to_disk_scale(signal: FloatArray, dims: int, channels: int) -> npt.NDArray[np.float32]:
    if dims == 3:
        return (signal * NIFTI_SCALE).astype(np.float32)
    full = PNG8_MAX if channels == 3 else PNG16_MAX
    return np.round(signal * full).astype(np.float32)


def make_synthetic_arrays(
    *,
    sites: int = 3,
    images_per_site: int = 120,
    classes: int = 3,
    dims: int = 2,
    size: int = 32,
    channels: int = 1,
    seed: int = 0,
    site_names: Sequence[str] | None = None,
    images_per_group: int = 2,
    class_skew: float = DEFAULT_CLASS_SKEW,
) -> SyntheticArrays:
    """Generate the synthetic multi-site data set in memory.

    Args:
        sites: number of sites (default names ``site_a``, ``site_b``, ...).
        images_per_site: images per site, exactly.
        classes: number of classes (``class_0``, ...); see :data:`SHAPE_KINDS`.
        dims: 2 (images ``[C, size, size]``) or 3 (volumes ``[1, size, size, size]``).
        size: edge length in pixels/voxels.
        channels: 1 (grey) or 3 (RGB, 2D only).
        seed: seed of every random stream; same arguments give identical arrays.
        site_names: optional names of the sites (usable as folder names).
        images_per_group: images per group (patient/lesion); the last group of a site may be
            smaller.
        class_skew: how strongly each site (but the last) favours its own class, see
            :func:`site_class_mix`.

    Returns:
        :class:`SyntheticArrays` ``(images, labels, sites, groups)``; images are channel-first
        float32 in the on-disk value scale (16-bit PNG scale for 2D grey, 8-bit for RGB,
        ``y * 1000`` for 3D).
    """
    check_arguments(sites, images_per_site, classes, dims, size, channels, images_per_group)
    names = _resolve_site_names(sites, site_names)
    class_names = synthetic_class_names(classes)
    mix = site_class_mix(sites, classes, skew=class_skew)
    acquisitions = site_acquisitions(sites, seed)
    images: list[npt.NDArray[np.float32]] = []
    labels: list[str] = []
    site_of: list[str] = []
    groups: list[str] = []
    n_groups = math.ceil(images_per_site / images_per_group)
    for s, (site, acq) in enumerate(zip(names, acquisitions, strict=True)):
        order_rng = np.random.default_rng([seed, _STREAM_CLASS_ORDER, s])
        rng = np.random.default_rng([seed, _STREAM_CONTENT, s])
        field = acq.bias_field((size,) * dims)
        labels_of_groups = group_labels(mix[s], n_groups, order_rng)
        for g, label in enumerate(labels_of_groups):
            group = draw_group(label, size, dims, rng)
            count = min(images_per_group, images_per_site - g * images_per_group)
            for i in range(count):
                content = render_group_image(group, size, dims, i == 0, rng)
                signal = acquire(content, acq, field, channels, rng)
                images.append(_to_disk_scale(signal, dims, channels))
                labels.append(class_names[label])
                site_of.append(site)
                groups.append(f"{site}_g{g:04d}")
    return SyntheticArrays(images, labels, site_of, groups)
