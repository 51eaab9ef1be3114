"""Bring images read from disk to the run's geometry: channel count and spatial size.

Reading is done by :mod:`sitefusion.io`; this module only adapts arrays (``[C, *S]`` channel-first)
so that every image of a run has the same shape ``[C, *spatial_size]``. The resize is the one
MONAI's ``Resize`` performs (``torch.nn.functional.interpolate``, ``align_corners=None``, no
anti-aliasing), called directly: MONAI's wrapper builds a ``MetaTensor`` and records the
transform, which cost four times the interpolation itself on every scored image and is
discarded here (tests check that the two give identical arrays).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sitefusion.errors import ImageReadError
from sitefusion.io import read_image

__all__ = ["check_channels", "conform", "load_image_stack"]


def check_channels(
    found: int, channels: int, *, path: str | Path = "<array>", convert_colour: bool = False
) -> None:
    """Refuse an image of ``found`` channels for a run of ``channels`` unless converting; also
    usable on the channel count a raster header states, before any pixel is decoded.

    Raises:
        ImageReadError: naming ``path``, the channels found and those the run takes.
    """
    if found != channels and not convert_colour:
        raise ImageReadError(
            path,
            f"image has {found} channel(s); this run takes {channels} "
            "(pass the colour-conversion option to convert grey/RGB)",
        )


def conform(
    array: np.ndarray,
    spatial_size: Sequence[int],
    channels: int,
    *,
    path: str | Path = "<array>",
    convert_colour: bool = False,
) -> np.ndarray:
    """Resize ``array`` ``[C, *S]`` to ``[channels, *spatial_size]`` (float32).

    Resizing always applies (area interpolation when shrinking). A channel mismatch is an error
    unless ``convert_colour`` is set: then grey is repeated to RGB and RGB becomes grey as the
    ITU-R BT.601 luma. A 2D image for a 3D run (or the reverse) is always an error.

    Raises:
        ImageReadError: naming ``path`` when dimensionality or channels do not fit.
    """
    want_dims = len(spatial_size)
    dims = array.ndim - 1
    if dims != want_dims:
        raise ImageReadError(
            path,
            f"image is {dims}D with shape {list(array.shape)}; this run takes {want_dims}D images",
        )
    c = array.shape[0]
    if c != channels:
        check_channels(c, channels, path=path, convert_colour=convert_colour)
        if c == 1 and channels == 3:
            array = np.repeat(array, 3, axis=0)
        elif c in (3, 4) and channels == 1:
            array = (0.299 * array[0] + 0.587 * array[1] + 0.114 * array[2])[None]
        else:
            raise ImageReadError(path, f"cannot convert {c} channels to {channels}")
    if tuple(array.shape[1:]) != tuple(spatial_size):
        shrinking = all(s >= t for s, t in zip(array.shape[1:], spatial_size, strict=True))
        mode = "area" if shrinking else ("bilinear" if want_dims == 2 else "trilinear")
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        with torch.inference_mode():
            resized = F.interpolate(x[None], size=tuple(spatial_size), mode=mode)[0]
        array = resized.numpy()
    return np.ascontiguousarray(array, dtype=np.float32)


def load_image_stack(
    paths: Sequence[Path],
    spatial_size: Sequence[int],
    channels: int,
    *,
    workers: int = 2,
    convert_colour: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Read and conform many images into one ``[N, C, *spatial_size]`` float32 array.

    Decoding runs in a small thread pool (image decoders release the GIL).

    Raises:
        ImageReadError: for the first file that cannot be read or conformed; it names the file.
    """
    out = np.empty((len(paths), channels, *spatial_size), dtype=np.float32)

    def work(i: int) -> int:
        image = read_image(paths[i])
        out[i] = conform(
            image.array, spatial_size, channels, path=paths[i], convert_colour=convert_colour
        )
        return i

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(work, range(len(paths))):
            if on_progress is not None:
                on_progress(1)
    return out
