"""The shared content of the images: lesion-like objects whose shape is the class.

Every image shows a smooth, textured background plus foreground objects whose *shape* depends on
the class: class 0 filled discs, class 1 thin rings, class 2 bars (capsules), class 3 many small
dots, class 4 sinusoidal gratings inside discs; classes 5+ repeat the list at a larger scale.
Objects are added at random positions until a covered fraction drawn from the *same*
distribution for every class is reached (the last object is kept only if it brings the coverage
closer to the target), and the object contrast is drawn from the same distribution for every
class, so the mean intensity of an image says (almost) nothing about its class: the class lives
in shape and texture, which survives per-site intensity normalization. Coverage is 9-15 % of the
image in 2D; in 3D objects are 25 % larger and cover 4.5-7.5 %, so a 16^3 volume shows a few
recognisable balls, shells or rods rather than many specks.

Images come in groups (a patient / lesion): the images of one group share site, label and
objects (:class:`Group`), with small variations (sub-pixel to ~1 px shifts, a few percent of size
and contrast; the acquisition adds fresh noise). Splits must therefore be made by group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from sitefusion.data.synthetic.checks import FloatArray

__all__ = ["SHAPE_KINDS", "Group", "draw_group", "render_group_image"]

SHAPE_KINDS = ("discs", "rings", "bars", "dots", "gratings")
"""Object shape of class ``k`` is ``SHAPE_KINDS[k % 5]`` (at a larger scale for ``k >= 5``)."""

_EDGE = 0.5  # softness of object borders in pixels (anti-aliasing)


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
class Group:
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


def draw_group(label: int, size: int, dims: int, rng: np.random.Generator) -> Group:
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
    return Group(tuple(shapes), float(rng.uniform(0.45, 0.6)), _background(size, dims, rng))


def render_group_image(
    group: Group, size: int, dims: int, first: bool, rng: np.random.Generator
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
