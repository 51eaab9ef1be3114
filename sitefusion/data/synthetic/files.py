"""Writing the synthetic data set to disk: image files and the manifest.

PNG (2D) and gzipped NIfTI (3D) files in the value scale of
:mod:`~sitefusion.data.synthetic.arrays`, written atomically; the same arguments give
byte-identical files (gzip headers carry no time stamp).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sitefusion.atomic import write_bytes_atomic
from sitefusion.config import SyntheticConfig
from sitefusion.csvcells import csv_text
from sitefusion.data.synthetic.arrays import make_synthetic_arrays
from sitefusion.data.synthetic.mix import DEFAULT_CLASS_SKEW

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "generate_from_config",
    "generate_synthetic_dataset",
]

MANIFEST_NAME = "manifest.csv"
"""File name of the manifest written into the output directory."""
MANIFEST_COLUMNS = ("image_id", "image", "label", "site", "group")
"""Columns of the manifest, in order."""


def _encode_png(image: npt.NDArray[np.float32]) -> bytes:
    from PIL import Image  # imported lazily: only writing PNG files needs PIL

    if image.shape[0] == 1:
        pil = Image.fromarray(image[0].astype(np.uint16))
    else:
        pil = Image.fromarray(np.moveaxis(image, 0, -1).astype(np.uint8))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def _encode_nifti(image: npt.NDArray[np.float32]) -> bytes:
    import nibabel as nib  # imported lazily: only writing NIfTI files needs nibabel

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
    manifest = out / MANIFEST_NAME
    write_bytes_atomic(manifest, csv_text(MANIFEST_COLUMNS, rows).encode("utf-8"))
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
