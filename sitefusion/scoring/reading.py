"""Reading one item of a scoring batch: read, check that it fits the run, conform, resolve its
site, normalize it with its site's normalizer and check its intensities.

Runs in the batch's readers (forked processes or threads, :mod:`.reader_pool`;
:func:`init_reader_thread` sets each one up), so nothing here holds state between items. The site
normalization is per image (its result does not depend on the batch), and doing it here rather
than in the predicting thread takes it off the networks' critical path; the normalized image
also serves the intensity check and the explanation. :meth:`ItemReader.load` never raises: an
item that cannot be scored comes back as a :class:`LoadedItem` with the reason in ``error``,
which becomes its row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sitefusion.data import conform
from sitefusion.data.images import check_channels
from sitefusion.errors import ImageReadError
from sitefusion.io import read_dicom, read_dicom_series, read_image
from sitefusion.methods import LoadedRun
from sitefusion.normalization import NormalizedImage
from sitefusion.scoring.discovery import ScoreItem, valid_uid
from sitefusion.scoring.review import write_thumbnail
from sitefusion.scoring.site_resolution import SiteResolution, resolve_site

__all__ = ["ItemReader", "LoadedItem", "fit_problem", "init_reader_thread", "read_item"]


@dataclass
class LoadedItem:
    """One item after reading: the conformed array ``[C, *S]``, its normalization and
    intensity problem (:meth:`NormalizerBank.intensity_problem`), or the reason it failed."""

    item: ScoreItem
    array: np.ndarray | None = None
    error: str | None = None
    resolution: SiteResolution | None = None
    normalized: NormalizedImage | None = None
    intensity: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uids: tuple[str, ...] = ()


def fit_problem(item: ScoreItem, image: Any, spatial_dims: int, channels: int) -> str | None:
    """A specific reason the image cannot fit the run (``conform`` words the generic ones)."""
    meta = image.metadata
    frames = meta.get("num_frames")
    if (
        spatial_dims == 2
        and image.spatial_dims == 3
        and meta.get("format") == "dicom"
        and isinstance(frames, int)
    ):
        return (
            f"{item.input}: multi-frame DICOM instance ({frames} frames); this run scores "
            "single-frame 2D images"
        )
    original = list(meta.get("shape_original", []))
    while len(original) > 3 and original[-1] == 1:  # trailing singleton axes carry nothing
        original.pop()
    if meta.get("format") == "nifti" and len(original) >= 4:
        shape = "x".join(str(s) for s in meta.get("shape_original", []))
        if spatial_dims == 2 or image.channels != channels:
            return (
                f"{item.input}: 4D NIfTI ({shape}); this run takes {spatial_dims}D images "
                f"with {channels} channel(s)"
            )
    return None


def init_reader_thread() -> None:
    """Reader threads resize with torch single-threaded (the setting is per thread with
    OpenMP): each thread's parallel region would otherwise start its own team, and the readers'
    teams and the experts' team would oversubscribe the cores."""
    import torch

    # With another backend (native, TBB) the thread count is process-wide: leave it alone.
    if "ATen parallel backend: OpenMP" in torch.__config__.parallel_info():
        torch.set_num_threads(1)


def read_item(
    item: ScoreItem, max_elements: int, on_raster_header: Callable[[int], None] | None = None
) -> Any:
    """The image of one item (a file, a DICOM instance or series), read within ``max_elements``;
    ``on_raster_header`` as :func:`~sitefusion.io.read_image` takes it."""
    if item.kind == "dicom-instance":
        return read_dicom(item.files[0], max_elements=max_elements)
    if item.kind == "dicom-series":
        return read_dicom_series(list(item.files), max_elements=max_elements)
    return read_image(item.files[0], max_elements=max_elements, on_raster_header=on_raster_header)


@dataclass(frozen=True)
class ItemReader:
    """How a batch reads its items: the run's geometry and limits, the site options."""

    run: LoadedRun
    site: str | None
    site_map: Any
    convert_colour: bool
    #: Where the review page's thumbnails go (``None``: none are written). They are made here,
    #: in the readers, rather than beside the networks, which they would slow down.
    out: Path | None = None

    def _check_header(self, item: ScoreItem) -> Callable[[int], None] | None:
        """A raster whose header states channels the run cannot take is refused before its
        pixels are decoded (a photograph can be large). Other formats: checked after reading."""
        if item.kind != "file" or self.convert_colour or len(self.run.spatial_size) != 2:
            return None

        def check(found: int) -> None:
            check_channels(found, self.run.channels, path=item.input)

        return check

    def load(self, item: ScoreItem) -> LoadedItem:
        """Read, check and conform one item; never raises."""
        result = LoadedItem(
            item, study_uid=item.study_uid, series_uid=item.series_uid, sop_uids=item.sop_uids
        )
        if item.error is not None:
            result.error = item.error
            return result
        try:
            image = read_item(item, self.run.cfg.scoring.max_elements, self._check_header(item))
            meta = image.metadata
            result.study_uid = valid_uid(meta.get("StudyInstanceUID")) or item.study_uid
            result.series_uid = valid_uid(meta.get("SeriesInstanceUID")) or item.series_uid
            sops = meta.get("SOPInstanceUIDs")
            if isinstance(sops, list) and sops:
                result.sop_uids = tuple(u for u in map(valid_uid, sops) if u)
            problem = fit_problem(item, image, len(self.run.spatial_size), self.run.channels)
            if problem is not None:
                result.error = problem
                return result
            result.array = conform(
                image.array,
                self.run.spatial_size,
                self.run.channels,
                path=item.input,
                convert_colour=self.convert_colour,
            )
            result.resolution = resolve_site(meta, flag=self.site, site_map=self.site_map)
        except ImageReadError as err:
            # conform() words the remedy generically; name the flag of this command
            result.error = str(err).replace("the colour-conversion option", "--convert-colour")
        except Exception as err:  # one bad file never stops the batch
            result.error = (
                f"{item.input}: unexpected error while reading: {type(err).__name__}: {err}"
            )
        if result.array is not None and result.error is None:
            self._normalize(result, result.array)
        if result.array is not None and self.out is not None:
            # The review page shows each image as it was scored; on failure it shows "no
            # image", and the score is unaffected.
            with contextlib.suppress(Exception):
                write_thumbnail(self.out, item.item_id, result.array)
        return result

    def _normalize(self, result: LoadedItem, array: np.ndarray) -> None:
        """The item's site normalization and intensity check (a refusal is the item's error)."""
        bank = self.run.bank
        site = result.resolution.site if result.resolution else None
        try:
            result.normalized = bank.transform(array, site)
            result.intensity = bank.intensity_problem(array, result.normalized)
        except Exception as err:  # e.g. a normalizer refusing a degenerate image
            first = str(err).splitlines()[0] if str(err) else ""
            result.error = f"{result.item.input}: prediction failed: {type(err).__name__}: {first}"
            result.array = result.normalized = None
