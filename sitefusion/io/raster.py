"""Read PNG, JPEG and the other single-frame raster formats Pillow knows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.errors import ImageReadError
from sitefusion.io.formats import require_file
from sitefusion.io.types import ImageData, build_image

__all__ = ["read_raster"]

# Modes whose values are already grey levels; 16/32-bit and float ones keep their range.
_GREY_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
# Modes reduced to one grey channel (alpha dropped, bilevel -> 0/255).
_TO_GREY = ("1", "LA", "La")


def read_raster(path: str | os.PathLike[str]) -> ImageData:
    """Read a raster image with Pillow.

    Grey (8/16/32-bit, float) -> ``[1, H, W]`` with its values kept; RGB -> ``[3, H, W]``;
    RGBA, palette (P/PA), CMYK, YCbCr -> RGB ``[3, H, W]`` with alpha dropped; LA/1 -> grey.
    The EXIF orientation of photographs is applied. For multi-picture JPEGs (MPO) the primary
    picture is read; other multi-frame files (animated GIF, TIFF stacks) are refused.

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
            opened.load()
            image = ImageOps.exif_transpose(opened)
            array = _to_array(image, mode, p)
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
    return build_image(p, array, metadata)


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
    """Pillow image -> float32 ``[1, H, W]`` or ``[3, H, W]``."""
    if image.mode in _TO_GREY:
        image = image.convert("L")
    if image.mode in _GREY_MODES:
        return np.asarray(image).astype(np.float32)[None]
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError as err:
            raise ImageReadError(path, f"unsupported colour mode {mode}") from err
    return np.asarray(image).astype(np.float32).transpose(2, 0, 1)
