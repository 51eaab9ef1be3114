"""Deterministic synthetic multi-site data sets (for the demo and the test fixtures).

The generator imitates the situation sitefusion is built for: several hospitals ("sites") image
the same kinds of findings, but each site has its own case mix and its own acquisition chain.

Content (shared by all sites)
    Every image shows a smooth, textured background plus foreground objects whose *shape* depends
    on the class: class 0 filled discs, class 1 thin rings, class 2 bars (capsules), class 3 many
    small dots, class 4 sinusoidal gratings inside discs; classes 5+ repeat the list at a larger
    scale. Objects are added at random positions until a covered fraction drawn from the *same*
    distribution for every class is reached (the last object is kept only if it brings the
    coverage closer to the target), and the object contrast is drawn from the same distribution
    for every class, so the mean intensity of an image says (almost) nothing about its class: the
    class lives in shape and texture, which survives per-site intensity normalization.
    Coverage is 9-15 % of the image in 2D; in 3D objects are 25 % larger and cover 4.5-7.5 %, so
    a 16^3 volume shows a few recognisable balls, shells or rods rather than many specks.

Groups
    Images come in groups (a patient / lesion) of ``images_per_group``: the images of one group
    share site, label and objects, with small variations (sub-pixel to ~1 px shifts, a few percent
    of size and contrast, fresh acquisition noise). Splits must therefore be made by group.

Class mix (:func:`site_class_mix`)
    Like real hospitals, sites see different case mixes. With ``S`` sites and ``K`` classes, site
    ``s < S - 1`` is skewed towards class ``s mod K``: its mix is
    ``(1 - skew) * uniform + skew * onehot(s mod K)`` (``skew = 0.5`` and ``K = 3`` give
    2/3 of the dominant class, 1/6 of each other class); the last site is balanced. Group counts
    are allocated exactly (largest remainder, not sampled) and every class gets at least one group
    per site when there are at least ``K`` groups, then the group order is shuffled.

Acquisition (:class:`SiteAcquisition`, :func:`site_acquisitions`)
    Each site maps the shared content ``c`` (in ``[0, 1]``) to its signal ``y`` (fraction of full
    scale) as ``y = offset + gain * (c ** gamma) * exp(bias * field)`` with a smooth, site-specific
    polynomial bias field in ``[-1, 1]``; for RGB the result is tinted (a fixed, stain-like tint
    shared by all sites) and multiplied by a per-site, per-channel colour cast; then Gaussian noise
    of standard deviation ``noise`` is added and ``y`` is clipped to ``[0, 1]``. Site brightness is
    stratified: the expected mean signal of the sites is spread over ``[0.12, 0.62]`` of full scale
    in a random order, so site means differ by many times the spread of image means within a site,
    and gain/noise differ too (site standard deviations differ).

Value scale (what :func:`make_synthetic_arrays` returns is exactly what the files hold)
    * 2D grey (``channels=1``): 16-bit PNG, value ``round(y * 65535)`` (:data:`PNG16_MAX`).
    * 2D RGB (``channels=3``): 8-bit RGB PNG, value ``round(y * 255)`` per channel
      (:data:`PNG8_MAX`).
    * 3D (``channels=1``): NIfTI ``.nii.gz``, float32 value ``y * 1000`` (:data:`NIFTI_SCALE`,
      arbitrary MR-like units), identity affine (1 mm voxels), array axes written in order.

Determinism
    Everything is drawn from ``numpy.random.default_rng([seed, stream, ...])`` generators, one
    stream per purpose and site; no global state. The same arguments give identical arrays and
    byte-identical files (gzip headers carry no time stamp).

Why this module is long: the generator is the embedded default of ``make demo`` and the data of
every end-to-end test, in 2D and 3D; its shapes, class mixes and per-site acquisition chains are
one design that reads best in one file.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from sitefusion.atomic import write_bytes_atomic
from sitefusion.config import SyntheticConfig
from sitefusion.errors import ConfigError

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "NIFTI_SCALE",
    "PNG8_MAX",
    "PNG16_MAX",
    "SHAPE_KINDS",
    "SiteAcquisition",
    "SyntheticArrays",
    "default_site_names",
    "generate_from_config",
    "generate_synthetic_dataset",
    "make_synthetic_arrays",
    "site_acquisitions",
    "site_class_mix",
    "synthetic_class_names",
]

PNG16_MAX = 65535
"""Full scale of 2D grey images: a 16-bit PNG value of ``y * PNG16_MAX``."""
PNG8_MAX = 255
"""Full scale of 2D RGB images: an 8-bit PNG value of ``y * PNG8_MAX`` per channel."""
NIFTI_SCALE = 1000.0
"""Full scale of 3D volumes: a float32 NIfTI value of ``y * NIFTI_SCALE``."""
MANIFEST_NAME = "manifest.csv"
"""File name of the manifest written into the output directory."""
MANIFEST_COLUMNS = ("image_id", "image", "label", "site", "group")
"""Columns of the manifest, in order."""
SHAPE_KINDS = ("discs", "rings", "bars", "dots", "gratings")
"""Object shape of class ``k`` is ``SHAPE_KINDS[k % 5]`` (at a larger scale for ``k >= 5``)."""

DEFAULT_CLASS_SKEW = 0.5

# Independent random streams: default_rng([seed, stream, site]).
_STREAM_ACQUISITION = 1
_STREAM_CLASS_ORDER = 2
_STREAM_CONTENT = 3

_EDGE = 0.5  # softness of object borders in pixels (anti-aliasing)
_RGB_TINT = (1.0, 0.78, 0.9)  # shared, stain-like tint of RGB content
_NOMINAL_CONTENT_MEAN = 0.33  # typical mean of the content, used to place site brightness
_SITE_MEAN_RANGE = (0.12, 0.62)  # expected site mean signals are stratified over this range

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Names and class mix


def default_site_names(n_sites: int) -> list[str]:
    """``["site_a", "site_b", ..., "site_z", "site_aa", ...]`` for ``n_sites`` sites."""
    names = []
    for i in range(n_sites):
        letters = ""
        j = i + 1
        while j > 0:  # bijective base 26: a..z, aa..zz, ...
            j, r = divmod(j - 1, 26)
            letters = chr(ord("a") + r) + letters
        names.append(f"site_{letters}")
    return names


def synthetic_class_names(classes: int) -> list[str]:
    """``["class_0", ..., "class_{classes-1}"]``."""
    return [f"class_{k}" for k in range(classes)]


def site_class_mix(
    n_sites: int, classes: int, *, skew: float = DEFAULT_CLASS_SKEW
) -> npt.NDArray[np.float64]:
    """Expected class proportions of each site, shape ``[n_sites, classes]`` (rows sum to 1).

    Site ``s < n_sites - 1`` gets ``(1 - skew) * uniform + skew * onehot(s mod classes)``; the
    last site (and a single site) is balanced. ``skew = 0`` makes every site balanced.
    """
    _check_int("sites", n_sites, 1)
    _check_int("classes", classes, 2)
    if not 0.0 <= skew < 1.0:
        raise ConfigError(f"synthetic data: class_skew is {skew!r}; expected a number in [0, 1)")
    mix = np.full((n_sites, classes), 1.0 / classes)
    for s in range(n_sites - 1):
        mix[s] = (1.0 - skew) / classes
        mix[s, s % classes] += skew
    return mix


def _group_labels(
    mix: npt.NDArray[np.float64], n_groups: int, rng: np.random.Generator
) -> list[int]:
    """Exact allocation of ``n_groups`` to classes (largest remainder), shuffled."""
    k = mix.size
    raw = mix * n_groups
    counts = np.floor(raw).astype(int)
    for idx in np.argsort(-(raw - counts), kind="stable")[: n_groups - int(counts.sum())]:
        counts[idx] += 1
    if n_groups >= k:  # every class present at every site, taken from the largest classes
        for idx in range(k):
            while counts[idx] < 1:
                counts[int(np.argmax(counts))] -= 1
                counts[idx] += 1
    labels = np.repeat(np.arange(k), counts)
    rng.shuffle(labels)
    return [int(v) for v in labels]


# --------------------------------------------------------------------------------------------
# Site acquisition


@dataclass(frozen=True)
class SiteAcquisition:
    """How one site turns shared content ``c`` in ``[0, 1]`` into its signal (fraction of scale).

    ``y = offset + gain * c ** gamma * exp(bias * field)``; RGB: ``y_ch = y * tint_ch *
    colour_cast[ch]``; then ``+ N(0, noise)`` and clipping to ``[0, 1]``. ``field`` is the smooth
    polynomial of :meth:`bias_field` defined by ``bias_coefficients``.

    Attributes:
        gain: contrast multiplier.
        offset: additive baseline (fraction of full scale).
        gamma: exponent applied to the content (< 1 brightens mid-tones).
        noise: standard deviation of additive Gaussian noise (fraction of full scale).
        bias: strength of the multiplicative bias field (``exp(±bias)`` at the extremes).
        colour_cast: per-channel (R, G, B) multipliers, mean 1; used for RGB only.
        bias_coefficients: linear (axes 0, 1, 2) then quadratic (axes 0, 1, 2) coefficients of
            the bias-field polynomial.
    """

    gain: float
    offset: float
    gamma: float
    noise: float
    bias: float
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bias_coefficients: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    def bias_field(self, shape: Sequence[int]) -> FloatArray:
        """Multiplicative bias field ``exp(bias * field)`` of spatial ``shape`` (2 or 3 axes).

        ``field`` is ``sum_a lin_a * u_a + quad_a * (u_a**2 - 1/3)`` with ``u_a`` in ``[-1, 1]``
        along axis ``a``, scaled so that ``|field| <= 1``.
        """
        dims = len(shape)
        lin = np.asarray(self.bias_coefficients[:3], dtype=np.float64)[:dims]
        quad = np.asarray(self.bias_coefficients[3:6], dtype=np.float64)[:dims]
        norm = float(np.abs(lin).sum() + (2.0 / 3.0) * np.abs(quad).sum())
        field = np.zeros(tuple(shape))
        if norm == 0.0 or self.bias == 0.0:
            return np.ones(tuple(shape))
        for a, n in enumerate(shape):
            u = (np.arange(n) + 0.5) / n * 2.0 - 1.0
            u = u.reshape([n if b == a else 1 for b in range(dims)])
            field = field + lin[a] * u + quad[a] * (u**2 - 1.0 / 3.0)
        result: FloatArray = np.exp(self.bias * field / norm)
        return result


def site_acquisitions(n_sites: int, seed: int = 0) -> list[SiteAcquisition]:
    """Draw the acquisition of ``n_sites`` sites, deterministically from ``seed``.

    Site brightness is stratified: the sites' expected mean signals are spread evenly (random
    order, jittered within their slot) over ``[0.12, 0.62]`` of full scale, and ``offset`` is
    solved from it, so any two sites differ in mean by at least ~0.1 of full scale for three
    sites. ``gain`` is drawn in ``[0.22, 0.42]`` (capped to avoid saturation), ``gamma`` in
    ``[0.7, 1.45]``, ``bias`` in ``[0.1, 0.3]``, ``noise`` is ``gain * [0.04, 0.12]`` and the
    colour cast is ``[0.8, 1.2]`` per channel, normalized to mean 1.
    """
    _check_int("sites", n_sites, 1)
    rng = np.random.default_rng([seed, _STREAM_ACQUISITION])
    ranks = rng.permutation(n_sites)
    low, high = _SITE_MEAN_RANGE
    result = []
    for s in range(n_sites):
        position = (ranks[s] + rng.uniform(0.2, 0.8)) / n_sites
        target = low + (high - low) * position
        gamma = math.exp(rng.uniform(math.log(0.7), math.log(1.45)))
        bias = rng.uniform(0.1, 0.3)
        nominal = _NOMINAL_CONTENT_MEAN**gamma
        gain = rng.uniform(0.22, 0.42)
        # Keep the offset positive and the brightest objects (content ~0.95) below full scale.
        gain = min(gain, (target - 0.01) / nominal, (0.97 - target) / (math.exp(bias) - nominal))
        offset = target - gain * nominal
        noise = gain * rng.uniform(0.04, 0.12)
        cast = rng.uniform(0.8, 1.2, size=3)
        cast = cast / cast.mean()
        coefficients = rng.normal(size=6)
        result.append(
            SiteAcquisition(
                gain=float(gain),
                offset=float(offset),
                gamma=float(gamma),
                noise=float(noise),
                bias=float(bias),
                colour_cast=(float(cast[0]), float(cast[1]), float(cast[2])),
                bias_coefficients=tuple(float(c) for c in coefficients),
            )
        )
    return result


def _acquire(
    content: FloatArray,
    acq: SiteAcquisition,
    bias_field: FloatArray,
    channels: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Signal of one image, ``[C, *spatial]`` in ``[0, 1]``, from content ``[*spatial]``."""
    # Small session-to-session drift of the same scanner.
    gain = acq.gain * rng.uniform(0.97, 1.03)
    offset = acq.offset + rng.normal(0.0, 0.003)
    y = offset + gain * np.clip(content, 0.0, 1.0) ** acq.gamma * bias_field
    if channels == 1:
        stack = y[None]
    else:
        scale = np.array(
            [_RGB_TINT[c % 3] * acq.colour_cast[c % 3] for c in range(channels)], dtype=np.float64
        )
        stack = y[None] * scale.reshape((channels,) + (1,) * y.ndim)
    stack = stack + rng.normal(0.0, acq.noise, size=stack.shape)
    result: FloatArray = np.clip(stack, 0.0, 1.0)
    return result


# --------------------------------------------------------------------------------------------
# Shared content


@dataclass(frozen=True)
class _Shape:
    kind: str
    centre: tuple[float, ...]
    radius: float  # disc/ring/grating radius, dot radius, bar half-length
    width: float = 0.0  # ring thickness, bar half-width
    direction: tuple[float, ...] = ()  # bar axis, grating wave vector direction
    frequency: float = 0.0  # grating cycles per pixel
    phase: float = 0.0
    amplitude: float = 1.0


def _axes(size: int, dims: int) -> list[FloatArray]:
    """Broadcastable pixel-centre coordinates, one array per axis."""
    return [
        (np.arange(size, dtype=np.float64) + 0.5).reshape(
            [size if b == a else 1 for b in range(dims)]
        )
        for a in range(dims)
    ]


def _step(z: FloatArray) -> FloatArray:
    result: FloatArray = 0.5 * (1.0 + np.tanh(z / _EDGE))
    return result


def _unit(rng: np.random.Generator, dims: int) -> tuple[float, ...]:
    v = rng.normal(size=dims)
    v = v / max(float(np.linalg.norm(v)), 1e-9)
    return tuple(float(x) for x in v)


def _draw_shape(kind: str, scale: float, size: int, dims: int, rng: np.random.Generator) -> _Shape:
    """One object of ``kind`` with random size, position and orientation."""
    amplitude = float(rng.uniform(0.85, 1.0))
    direction: tuple[float, ...] = ()
    width = 0.0
    frequency = 0.0
    phase = 0.0
    if kind == "discs":
        radius = size * rng.uniform(0.10, 0.16) * scale
        extent = radius
    elif kind == "rings":
        radius = size * rng.uniform(0.17, 0.25) * scale
        width = max(1.3, size * rng.uniform(0.045, 0.06) * scale)
        extent = radius
    elif kind == "bars":
        radius = size * rng.uniform(0.15, 0.25) * scale
        width = max(0.9, size * rng.uniform(0.035, 0.05) * scale)
        direction = _unit(rng, dims)
        extent = radius * 0.7
    elif kind == "dots":
        radius = max(1.0, size * rng.uniform(0.035, 0.05) * scale)
        extent = radius
    else:  # gratings
        radius = size * rng.uniform(0.16, 0.24) * scale
        direction = _unit(rng, dims)
        frequency = float(rng.uniform(0.22, 0.3) / scale)
        phase = float(rng.uniform(0.0, 2.0 * math.pi))
        extent = radius
    margin = min(max(extent, 1.0), size * 0.35)
    centre = tuple(float(c) for c in rng.uniform(margin, size - margin, size=dims))
    return _Shape(kind, centre, float(radius), float(width), direction, frequency, phase, amplitude)


def _render_shape(shape: _Shape, axes: list[FloatArray]) -> FloatArray:
    """Soft mask of one object in ``[0, 1]`` (times its amplitude), full spatial shape."""
    rel = [ax - c for ax, c in zip(axes, shape.centre, strict=True)]
    if shape.kind == "bars":
        u = shape.direction
        along = np.clip(
            sum(r * d for r, d in zip(rel, u, strict=True)), -shape.radius, shape.radius
        )
        dist = np.sqrt(sum((r - along * d) ** 2 for r, d in zip(rel, u, strict=True)))
        mask = _step(shape.width - dist)
    else:
        dist = np.sqrt(sum(r**2 for r in rel))
        mask = _step(shape.radius - dist)
        if shape.kind == "rings":
            mask = mask * _step(dist - (shape.radius - shape.width))
        elif shape.kind == "gratings":
            wave = sum(r * d for r, d in zip(rel, shape.direction, strict=True))
            mask = mask * (0.5 + 0.5 * np.cos(2.0 * math.pi * shape.frequency * wave + shape.phase))
    result: FloatArray = shape.amplitude * mask
    return result


def _jitter(shape: _Shape, size: int, rng: np.random.Generator) -> _Shape:
    """The same object seen again: shifted by ~0.7 px, a few percent larger or smaller."""
    centre = tuple(float(np.clip(c + rng.normal(0.0, 0.7), 0.0, size)) for c in shape.centre)
    direction = shape.direction
    if direction:
        d = np.asarray(direction) + rng.normal(0.0, 0.08, size=len(direction))
        direction = tuple(float(x) for x in d / max(float(np.linalg.norm(d)), 1e-9))
    return replace(
        shape,
        centre=centre,
        radius=shape.radius * float(rng.uniform(0.95, 1.05)),
        direction=direction,
        phase=shape.phase + float(rng.normal(0.0, 0.3)),
        amplitude=shape.amplitude * float(rng.uniform(0.96, 1.04)),
    )


@dataclass(frozen=True)
class _Group:
    """Everything the images of one group share."""

    shapes: tuple[_Shape, ...]
    contrast: float
    background: FloatArray


def _background(size: int, dims: int, rng: np.random.Generator) -> FloatArray:
    """Smooth, class-independent tissue background around 0.26 with faint blobs."""
    axes = _axes(size, dims)
    level = rng.uniform(0.22, 0.30)
    bg = np.full((size,) * dims, level)
    for _ in range(3):  # low-frequency texture
        k = rng.normal(0.0, 1.2, size=dims) * 2.0 * math.pi / size
        bg = bg + 0.025 * np.cos(
            sum(kk * ax for kk, ax in zip(k, axes, strict=True)) + rng.uniform(0, 6.3)
        )
    for _ in range(int(rng.integers(0, 3))):  # faint distractor blobs
        c = rng.uniform(0.0, size, size=dims)
        sigma = size * rng.uniform(0.06, 0.12)
        d2 = sum((ax - cc) ** 2 for ax, cc in zip(axes, c, strict=True))
        bg = bg + 0.08 * np.exp(-d2 / (2.0 * sigma**2))
    return bg


def _draw_group(label: int, size: int, dims: int, rng: np.random.Generator) -> _Group:
    """Objects of one group: shapes of the class added until a class-independent coverage."""
    axes = _axes(size, dims)
    kind = SHAPE_KINDS[label % len(SHAPE_KINDS)]
    scale = 1.0 + 0.35 * (label // len(SHAPE_KINDS))
    if dims == 3:
        # A volume fraction grows like (r / size) ** 3: bigger objects and a lower coverage keep
        # a small (16^3) volume from filling up with many tiny objects.
        scale *= 1.25
        target = rng.uniform(0.045, 0.075)
    else:
        target = rng.uniform(0.09, 0.15)
    union = np.zeros((size,) * dims)
    shapes: list[_Shape] = []
    while len(shapes) < 64:
        shape = _draw_shape(kind, scale, size, dims, rng)
        grown = np.maximum(union, _render_shape(shape, axes))
        before, after = float(union.mean()), float(grown.mean())
        # Keep the last object only if it brings the coverage closer to the target: the mean
        # coverage is then the same for big objects (discs) and small ones (dots).
        if shapes and after >= target and after - target > target - before:
            break
        shapes.append(shape)
        union = grown
        if after >= target:
            break
    return _Group(tuple(shapes), float(rng.uniform(0.45, 0.6)), _background(size, dims, rng))


def _render_group_image(
    group: _Group, size: int, dims: int, first: bool, rng: np.random.Generator
) -> FloatArray:
    """Content ``[*spatial]`` in about ``[0, 1]`` of one image of ``group``."""
    axes = _axes(size, dims)
    union = np.zeros((size,) * dims)
    for shape in group.shapes:
        seen = shape if first else _jitter(shape, size, rng)
        union = np.maximum(union, _render_shape(seen, axes))
    contrast = group.contrast * (1.0 if first else float(rng.uniform(0.96, 1.04)))
    result: FloatArray = group.background + contrast * union
    return result


# --------------------------------------------------------------------------------------------
# Public generators


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


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(
            f"synthetic data: {name} is {value!r}; expected an integer of at least {minimum}"
        )


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


def _validate(
    sites: int,
    images_per_site: int,
    classes: int,
    dims: int,
    size: int,
    channels: int,
    images_per_group: int,
) -> None:
    _check_int("sites", sites, 1)
    _check_int("images_per_site", images_per_site, 1)
    _check_int("classes", classes, 2)
    _check_int("size", size, 8)
    _check_int("images_per_group", images_per_group, 1)
    if dims not in (2, 3):
        raise ConfigError(f"synthetic data: dims is {dims!r}; expected 2 or 3")
    valid_channels = (1, 3) if dims == 2 else (1,)
    if channels not in valid_channels:
        expected = "1 (grey) or 3 (RGB)" if dims == 2 else "1 (3D volumes are single-channel)"
        raise ConfigError(
            f"synthetic data: channels is {channels!r} for {dims}D; expected {expected}"
        )


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
    _validate(sites, images_per_site, classes, dims, size, channels, images_per_group)
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
        group_labels = _group_labels(mix[s], n_groups, order_rng)
        for g, label in enumerate(group_labels):
            group = _draw_group(label, size, dims, rng)
            count = min(images_per_group, images_per_site - g * images_per_group)
            for i in range(count):
                content = _render_group_image(group, size, dims, i == 0, rng)
                signal = _acquire(content, acq, field, channels, rng)
                images.append(_to_disk_scale(signal, dims, channels))
                labels.append(class_names[label])
                site_of.append(site)
                groups.append(f"{site}_g{g:04d}")
    return SyntheticArrays(images, labels, site_of, groups)


def _encode_png(image: npt.NDArray[np.float32]) -> bytes:
    from PIL import Image  # imported lazily: the module is also used without any file output

    if image.shape[0] == 1:
        pil = Image.fromarray(image[0].astype(np.uint16))
    else:
        pil = Image.fromarray(np.moveaxis(image, 0, -1).astype(np.uint8))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def _encode_nifti(image: npt.NDArray[np.float32]) -> bytes:
    import nibabel as nib  # imported lazily

    nifti = nib.Nifti1Image(np.ascontiguousarray(image[0]), np.eye(4))
    nifti.header.set_data_dtype(np.float32)
    nifti.header.set_xyzt_units("mm")
    # mtime=0: no time stamp in the gzip header, so files are byte-identical for a seed.
    return gzip.compress(nifti.to_bytes(), compresslevel=6, mtime=0)


def generate_synthetic_dataset(
    out_dir: Path,
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
) -> Path:
    """Write the synthetic data set of :func:`make_synthetic_arrays` to ``out_dir``.

    Images go to ``out_dir/images/<site>/img_<nnnnn>.png`` (2D: 16-bit grey or 8-bit RGB) or
    ``.nii.gz`` (3D, float32); ``<nnnnn>`` counts the images of one site from 0. The manifest
    ``out_dir/manifest.csv`` has the columns ``image_id, image, label, site, group``, ``image``
    being the POSIX path relative to ``out_dir``. Existing files of the same names are replaced
    (atomically); other files in ``out_dir`` are left alone. The same arguments give
    byte-identical files. Arguments as for :func:`make_synthetic_arrays`.

    Returns:
        The path of the manifest.
    """
    data = make_synthetic_arrays(
        sites=sites,
        images_per_site=images_per_site,
        classes=classes,
        dims=dims,
        size=size,
        channels=channels,
        seed=seed,
        site_names=site_names,
        images_per_group=images_per_group,
        class_skew=class_skew,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if dims == 3 else ".png"
    rows: list[tuple[str, str, str, str, str]] = []
    counters: dict[str, int] = {}
    for image, label, site, group in zip(*data, strict=True):
        index = counters.get(site, 0)
        counters[site] = index + 1
        relative = f"images/{site}/img_{index:05d}{suffix}"
        path = out / relative
        if index == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        encoded = _encode_nifti(image) if dims == 3 else _encode_png(image)
        write_bytes_atomic(path, encoded)
        rows.append((f"{site}_img_{index:05d}", relative, label, site, group))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    manifest = out / MANIFEST_NAME
    write_bytes_atomic(manifest, text.getvalue().encode("utf-8"))
    return manifest


def generate_from_config(out_dir: Path, cfg: SyntheticConfig) -> Path:
    """:func:`generate_synthetic_dataset` with the settings of a config's ``data.synthetic``."""
    return generate_synthetic_dataset(
        out_dir,
        sites=cfg.sites,
        images_per_site=cfg.images_per_site,
        classes=cfg.classes,
        dims=cfg.dims,
        size=cfg.size,
        channels=cfg.channels,
        seed=cfg.seed,
    )
