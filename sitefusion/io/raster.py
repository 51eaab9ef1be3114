"""Read PNG, JPEG and the other single-frame raster formats Pillow knows."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.errors import ImageReadError
from sitefusion.io.files import MAX_ELEMENTS, check_size
from sitefusion.io.formats import require_file
from sitefusion.io.types import ImageData, build_image

__all__ = ["read_raster"]

# Modes whose values are already grey levels; 16/32-bit and float ones keep their range.
_GREY_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
# Modes reduced to one grey channel (alpha dropped, bilevel -> 0/255).
_TO_GREY = ("1", "LA", "La")


def read_raster(
    path: str | os.PathLike[str],
    *,
    max_elements: int = MAX_ELEMENTS,
    on_header: Callable[[int], None] | None = None,
) -> ImageData:
    """Read a raster image with Pillow.

    The size and colour mode in the header are checked before any pixel is decoded: an image of
    more than ``max_elements`` values (width x height x channels) is refused, except a JPEG,
    which is decoded at the largest DCT scale (1/2, 1/4, 1/8) that fits (``metadata``
    ``reduced_by``). A few hundred kilobytes of PNG or JPEG can describe gigabytes of pixels.

    Grey (8/16/32-bit, float) -> ``[1, H, W]`` with its values kept; RGB -> ``[3, H, W]``;
    RGBA, palette (P/PA), CMYK, YCbCr -> RGB ``[3, H, W]`` with alpha dropped; LA/1 -> grey.
    The EXIF orientation of photographs is applied. For multi-picture JPEGs (MPO) the primary
    picture is read; other multi-frame files (animated GIF, TIFF stacks) are refused.
    ``on_header`` is called with the channels the result will have (1 or 3) once the header is
    read and before any pixel is decoded: a caller that cannot use them raises there (an
    ``ImageReadError`` passes through unchanged), so a photograph of the wrong kind is never
    decoded.

    Returns:
        ``ImageData`` with ``metadata`` ``path``, ``format`` (``"png"``, ``"jpeg"``, ``"tiff"``,
        ...) and ``color_mode`` (Pillow's mode of the file).

    Raises:
        ImageReadError: "not an image" (Pillow cannot identify it), "truncated or corrupt ...
            data", multi-frame file, unsupported colour mode, image too large.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = require_file(path)
    fmt = _expected_format(p)
    try:
        with Image.open(p) as opened:
            fmt = "jpeg" if opened.format == "MPO" else str(opened.format or "image").lower()
            frames = int(getattr(opened, "n_frames", 1))
            if frames > 1 and fmt != "jpeg":
                raise ImageReadError(
                    p,
                    f"unsupported dimensionality: multi-frame {fmt.upper()} with {frames} frames",
                )
            mode = opened.mode
            if on_header is not None:
                on_header(_channels(mode))
            reduced = _fit_header(opened, fmt, mode, p, max_elements)
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)  # no copy of a large image
            array = _to_array(opened, mode, p)
    except ImageReadError:
        raise
    except UnidentifiedImageError as err:
        if fmt in ("png", "jpeg"):  # the magic number says so: a damaged file, not another type
            raise ImageReadError(
                p, f"truncated or corrupt {fmt.upper()} data: Pillow cannot parse the header"
            ) from err
        raise ImageReadError(p, "not an image: Pillow cannot identify the file format") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(p, f"image too large: {err}") from err
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error ...
        raise ImageReadError(
            p, f"truncated or corrupt {fmt.upper()} data: {type(err).__name__}: {err}"
        ) from err
    metadata: dict[str, Any] = {"path": str(p), "format": fmt, "color_mode": mode}
    if reduced > 1:
        metadata["reduced_by"] = reduced
    return build_image(p, array, metadata)


def _channels(mode: str) -> int:
    """The channels :func:`read_raster` returns for a Pillow mode: 1 (grey) or 3 (colour)."""
    return 1 if mode in (*_GREY_MODES, *_TO_GREY) else 3


def _fit_header(image: Any, fmt: str, mode: str, path: Path, max_elements: int) -> int:
    """Check the header's size before decoding; a JPEG too large is set to decode at a
    reduced scale (``Image.draft``). Returns the reduction factor (1: none)."""
    width, height = image.size
    channels = _channels(mode)
    # Pillow decodes every band of the file's mode before the conversion to grey or RGB.
    per_pixel = max(channels, len(image.getbands()))
    if width * height * per_pixel <= max_elements or fmt != "jpeg":
        check_size(path, (per_pixel, height, width), max_elements)  # raises when too large
        return 1
    for scale in (2, 4, 8):
        size = (-(-width // scale), -(-height // scale))
        if size[0] * size[1] * per_pixel <= max_elements:
            image.draft(image.mode, size)
            if image.size[0] * image.size[1] * per_pixel <= max_elements:
                return scale
            break
    check_size(path, (per_pixel, height, width), max_elements)  # raises: too large even at 1/8
    return 1


def _expected_format(path: Path) -> str:
    """Format named by the magic number, else by the suffix (for messages about damaged files)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError:  # Pillow will report the same problem with the file
        head = b""
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    suffix = path.suffix.lower().lstrip(".")
    return {"jpg": "jpeg", "tif": "tiff"}.get(suffix, suffix or "image")


def _to_array(image: Any, mode: str, path: Any) -> np.ndarray:
    """Pillow image -> ``[1, H, W]`` or ``[3, H, W]`` in its own dtype (a view where it can
    be): ``build_image`` makes the one float32 copy."""
    if image.mode in _TO_GREY:
        image = image.convert("L")
    if image.mode in _GREY_MODES:
        return np.asarray(image)[None]
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError as err:
            raise ImageReadError(path, f"unsupported colour mode {mode}") from err
    return np.asarray(image).transpose(2, 0, 1)
