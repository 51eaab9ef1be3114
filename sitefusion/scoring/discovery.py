"""Turn the inputs of a scoring batch (files and folders) into the items that get one row each.

* Folders are walked recursively in path order; hidden entries (names starting with ``.``), the
  output folder and the ``.img`` half of a ``.hdr``/``.img`` pair are left out. A file named
  explicitly is always an input.
* Every file is recognised by :func:`sitefusion.io.detect_format` and hashed (SHA-256 of its
  bytes); DICOM headers are parsed (no pixels) for their UIDs.
* A 2D run scores every DICOM instance as one item. A 3D run groups DICOM files by
  SeriesInstanceUID and scores each series as one volume; its content hash is the SHA-256 of the
  sorted file hashes. NIfTI and raster files are one item each.
* A file that cannot be recognised or parsed is an item too: it gets an error row.

An item's identity (``item_id``) is a hash of its input path (and series UID), so a rerun finds
its previous row; its content hash tells whether the bytes changed since.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydicom.uid import UID

from sitefusion.errors import ImageReadError
from sitefusion.io import detect_format, not_a_file
from sitefusion.io.dicom import read_dicom_dataset
from sitefusion.rundir import sha256_file
from sitefusion.scoring.redaction import patient_identifiers

__all__ = [
    "Discovery",
    "FileInfo",
    "ItemKind",
    "ScoreItem",
    "discover_items",
    "valid_uid",
    "walk_inputs",
]

ItemKind = Literal["dicom-instance", "dicom-series", "file", "unreadable"]
"""What one item is: a DICOM instance (2D run), a DICOM series (3D run), a NIfTI or raster file,
or a file that could not be recognised (it gets an error row)."""


@dataclass(frozen=True)
class FileInfo:
    """One input file as recognised: format, content hash, DICOM UIDs, or why it failed."""

    path: Path
    kind: Literal["dicom", "nifti", "raster", "error"]
    sha256: str
    error: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    sop_class_uid: str | None = None
    identifiers: frozenset[str] = field(default_factory=frozenset, repr=False)


@dataclass(frozen=True)
class ScoreItem:
    """One row of the scores: what to read, its identity and its content hash.

    Attributes:
        input: absolute path of the file, or for a DICOM series the common folder of its files.
        kind: see :data:`ItemKind`.
        files: the files read for it (one, or a series' files in path order).
        content_sha256: SHA-256 of the file bytes, or of a series' sorted file hashes
            (empty when the file cannot be read at all).
        error: why the item cannot be scored, when already known at discovery.
        study_uid, series_uid, sop_uids: DICOM UIDs when known; ``sop_classes`` maps each SOP
            Instance UID to its SOP Class UID (what an SR needs to reference it).
        identifiers: patient identifiers to redact from its free text (never in ``repr``):
            discovery sets its own DICOM headers'; a scoring batch adds every other header's
            (:attr:`Discovery.identifiers`).
    """

    input: str
    kind: ItemKind
    files: tuple[Path, ...]
    content_sha256: str
    error: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uids: tuple[str, ...] = ()
    sop_classes: tuple[tuple[str, str], ...] = ()
    identifiers: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)

    @property
    def item_id(self) -> str:
        """Stable identity: 16 hex digits of SHA-256 over the input path and series UID."""
        sub = self.series_uid if self.kind == "dicom-series" else ""
        # os.fsencode: a file name that is not valid UTF-8 keeps its exact bytes.
        blob = os.fsencode(self.input) + b"\0" + (sub or "").encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def sort_key(self) -> tuple[str, str]:
        """Deterministic order of rows: input path, then series UID."""
        return (self.input, self.series_uid or "")


@dataclass(frozen=True)
class Discovery:
    """Items to score (sorted by :attr:`ScoreItem.sort_key`) and the files they came from;
    ``identifiers``: the patient identifiers of every DICOM header met (never in ``repr``)."""

    items: list[ScoreItem]
    files: int = 0
    identifiers: frozenset[str] = field(default_factory=frozenset, repr=False)


def _pair_data(path: Path) -> bool:
    """The ``.img`` half of an Analyze/NIfTI pair: it is read (and scored) with its ``.hdr``."""
    return path.suffix.lower() == ".img" and any(
        path.with_suffix(s).is_file() for s in (".hdr", ".HDR")
    )


def walk_inputs(
    inputs: Iterable[str | os.PathLike[str]], exclude: Path | None = None
) -> list[Path]:
    """Absolute paths of every entry the inputs hold: folders walked recursively (sorted), files
    as given.

    Hidden entries inside folders, anything under ``exclude`` (the output folder, compared by
    real path, so a symbolic link to it is excluded too) and the ``.img`` half of a
    ``.hdr``/``.img`` pair are left out; duplicates are dropped (first one kept). Everything else
    met on the way is kept, so that it gets its row: a path that does not exist, a broken or
    looping symbolic link, a FIFO or device, and a folder that cannot be listed
    (:func:`classify_file` says what each is, without opening anything that is not a regular
    file). Symbolic links to folders are followed once; a folder reached again is not re-walked.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    excluded = Path(os.path.realpath(exclude)) if exclude is not None else None
    visited: set[tuple[int, int]] = set()

    def add(p: Path) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    def walk(folder: Path) -> None:
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in visited:
                return
            visited.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:
            add(folder)  # the folder gets a row that says why it could not be listed
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(".") or _inside(path, excluded):
                continue
            try:
                is_dir = entry.is_dir()  # follows a symbolic link
            except OSError:
                is_dir = False
            if is_dir:
                walk(path)
            elif not _pair_data(path):
                add(path)

    for raw in inputs:
        p = Path(os.path.abspath(raw))
        if p.is_dir():
            walk(p)
        else:
            add(p)
    return out


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        Path(os.path.realpath(path)).relative_to(folder)
    except ValueError:
        return False
    return True


def _hash(path: Path) -> str:
    """SHA-256 of the file; a ``.hdr`` with an ``.img`` beside it hashes both ("" if unreadable)."""
    try:
        digest = sha256_file(path)
        if path.suffix.lower() == ".hdr":
            data = [path.with_suffix(s) for s in (".img", ".IMG")]
            pair = next((d for d in data if d.is_file()), None)
            if pair is not None:
                both = f"{digest}\n{sha256_file(pair)}"
                digest = hashlib.sha256(both.encode()).hexdigest()
        return digest
    except OSError:
        return ""


def classify_file(path: Path) -> FileInfo:
    """Recognise one file: format, SHA-256 and, for DICOM, UIDs and patient identifiers.

    Never raises: a file that cannot be recognised is returned with ``kind="error"``. Nothing
    that is not a regular file is ever opened (:func:`not_a_file`).
    """
    problem = not_a_file(path)
    if problem is not None:
        return FileInfo(path, "error", "", error=problem)
    try:
        kind = detect_format(path)
    except ImageReadError as err:
        return FileInfo(path, "error", _hash(path), error=str(err))
    digest = _hash(path)
    if kind != "dicom":
        return FileInfo(path, kind, digest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = read_dicom_dataset(path, stop_before_pixels=True)
    except ImageReadError as err:
        return FileInfo(path, "error", digest, error=str(err))
    except Exception as err:  # a header pydicom half-parsed; reported, never raised
        return FileInfo(
            path, "error", digest, error=f"{path}: invalid DICOM header: {type(err).__name__}"
        )

    def text(keyword: str) -> str | None:
        try:
            value = ds.get(keyword)
        except Exception:  # malformed value: treat as absent
            return None
        return (str(value).strip() or None) if value is not None else None

    return FileInfo(
        path,
        "dicom",
        digest,
        study_uid=valid_uid(text("StudyInstanceUID")),
        series_uid=valid_uid(text("SeriesInstanceUID")),
        sop_uid=valid_uid(text("SOPInstanceUID")),
        sop_class_uid=valid_uid(text("SOPClassUID")),
        identifiers=frozenset(patient_identifiers(ds)),
    )


def valid_uid(value: object) -> str | None:
    """``value`` if it is a valid DICOM UID (digits and dots, at most 64 characters, no leading
    zeros), else ``None``: a header value such as ``=HYPERLINK(...)`` is never copied into the
    scores or into a Structured Report that references the image."""
    if not isinstance(value, str) or not value:
        return None
    return value if UID(value).is_valid else None


def _sop_classes(infos: Sequence[FileInfo]) -> tuple[tuple[str, str], ...]:
    return tuple((i.sop_uid, i.sop_class_uid) for i in infos if i.sop_uid and i.sop_class_uid)


def _series_hash(infos: Sequence[FileInfo]) -> str:
    return hashlib.sha256("\n".join(sorted(i.sha256 for i in infos)).encode()).hexdigest()


def _common_folder(paths: Sequence[Path]) -> str:
    return os.path.commonpath([str(p.parent) for p in paths])


def group_items(infos: Sequence[FileInfo], *, volumetric: bool) -> list[ScoreItem]:
    """Build the items from recognised files (see the module docstring), sorted."""
    items: list[ScoreItem] = []
    series: dict[str, list[FileInfo]] = {}
    for info in infos:
        if info.kind == "error":
            items.append(
                ScoreItem(str(info.path), "unreadable", (info.path,), info.sha256, info.error)
            )
        elif info.kind != "dicom":
            items.append(ScoreItem(str(info.path), "file", (info.path,), info.sha256))
        elif volumetric and info.series_uid:
            series.setdefault(info.series_uid, []).append(info)
        else:
            items.append(
                ScoreItem(
                    str(info.path),
                    "dicom-instance",
                    (info.path,),
                    info.sha256,
                    study_uid=info.study_uid,
                    series_uid=info.series_uid,
                    sop_uids=(info.sop_uid,) if info.sop_uid else (),
                    sop_classes=_sop_classes([info]),
                    identifiers=info.identifiers,
                )
            )
    for uid, members in series.items():
        members = sorted(members, key=lambda i: str(i.path))
        items.append(
            ScoreItem(
                _common_folder([m.path for m in members]),
                "dicom-series",
                tuple(m.path for m in members),
                _series_hash(members),
                study_uid=members[0].study_uid,
                series_uid=uid,
                sop_uids=tuple(m.sop_uid for m in members if m.sop_uid),
                sop_classes=_sop_classes(members),
                identifiers=frozenset().union(*(m.identifiers for m in members)),
            )
        )
    return sorted(items, key=lambda i: i.sort_key)


def discover_items(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    volumetric: bool,
    exclude: Path | None = None,
    workers: int = 2,
    on_file: Callable[[int], None] | None = None,
) -> Discovery:
    """Walk, recognise, hash and group the inputs into items.

    Args:
        inputs: files and folders.
        volumetric: ``True`` for a 3D run (DICOM series are one item), ``False`` for 2D.
        exclude: a folder whose files are never inputs (the output folder).
        workers: threads that hash and parse headers (I/O and hashing release the GIL).
        on_file: called with 1 after each file (progress).

    Returns:
        :class:`Discovery` with the sorted items.
    """
    paths = walk_inputs(inputs, exclude)

    def work(p: Path) -> FileInfo:
        info = classify_file(p)
        if on_file is not None:
            on_file(1)
        return info

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        infos = list(pool.map(work, paths))
    found = frozenset().union(*(i.identifiers for i in infos))
    return Discovery(group_items(infos, volumetric=volumetric), len(infos), found)
