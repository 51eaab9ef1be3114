"""CSV manifests: one row per image with its path, label, site and group (patient or lesion).

The column mapping comes from :class:`~sitefusion.config.DataConfig`. The image column may be a
plain column name or a template such as ``images/{image_id}.jpg`` filled from the row; relative
paths are resolved against the image root. Every problem is reported with the manifest's path,
the row number (1-based, header = row 1) and the column.
"""

from __future__ import annotations

import csv
import os
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sitefusion.atomic import write_text_atomic
from sitefusion.config import DataConfig
from sitefusion.csvcells import csv_text, unescape_cell
from sitefusion.errors import ManifestError, did_you_mean
from sitefusion.io import not_a_file

__all__ = ["Manifest", "Record", "load_manifest", "split_manifest_by_site"]

_MAX_REPORTED = 8


@dataclass(frozen=True)
class Record:
    """One image of a manifest. ``label`` is ``None`` for unlabelled (scoring) manifests."""

    id: str
    path: Path
    label: str | None
    site: str
    group: str
    row: int


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: records in file order, the class names and the site names."""

    source: Path
    records: tuple[Record, ...]
    classes: tuple[str, ...]
    sites: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def label_index(self, record: Record) -> int:
        """Integer label of ``record`` (index into :attr:`classes`)."""
        if record.label is None:
            raise ManifestError(f"{self.source}: row {record.row} has no label")
        return self.classes.index(record.label)

    def by_site(self) -> dict[str, list[Record]]:
        """Records grouped by site, in site order."""
        out: dict[str, list[Record]] = {s: [] for s in self.sites}
        for r in self.records:
            out[r.site].append(r)
        return out

    def subset(self, ids: Sequence[str] | set[str]) -> Manifest:
        """The records whose id is in ``ids`` (file order kept); classes and sites unchanged."""
        keep = set(ids)
        return Manifest(
            self.source, tuple(r for r in self.records if r.id in keep), self.classes, self.sites
        )


def _template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def load_manifest(
    path: str | Path,
    data: DataConfig,
    *,
    image_root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    require_labels: bool = True,
    check_files: bool = True,
    allow_outside_root: bool = False,
) -> Manifest:
    """Read and validate a CSV manifest.

    Args:
        path: the CSV file.
        data: the column mapping (``image``, ``label``, ``site``, ``group``, optional ``id``).
        image_root: directory that relative image paths are resolved against (default: the
            manifest's directory).
        classes: the known class names (for example a trained run's); a label outside them is an
            error. ``None`` takes ``data.classes`` or else the sorted labels found.
        require_labels: whether every row needs a label (training and evaluation do; scoring not).
        check_files: whether each image file must exist (and be a regular file).
        allow_outside_root: accept image paths outside ``image_root`` (absolute paths, ``..``,
            links leading out). Off by default: a manifest is data, and a row should not make
            the program read ``/etc/passwd``.

    Raises:
        ManifestError: naming the manifest, the row and the column of every problem found
            (up to eight are listed).
    """
    source = Path(path)
    root = Path(image_root) if image_root is not None else source.parent
    try:
        with source.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [unescape_cell(c) for c in reader.fieldnames or []]
            # Cells escaped by sitefusion's own CSV writers (per-site manifests) read back as
            # the values they were; a spreadsheet's export has no such apostrophes.
            rows = [
                {
                    unescape_cell(k) if isinstance(k, str) else k: (
                        unescape_cell(v) if isinstance(v, str) else v
                    )
                    for k, v in row.items()
                }
                for row in reader
            ]
    except FileNotFoundError as err:
        raise ManifestError(f"{source}: manifest file does not exist") from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ManifestError(f"{source}: cannot read the manifest as CSV ({err})") from err
    if not columns:
        raise ManifestError(f"{source}: the manifest is empty (no header row)")

    templated = "{" in data.image
    needed = {"site": data.site, "group": data.group}
    if require_labels:
        needed["label"] = data.label
    if data.id is not None:
        needed["id"] = data.id
    if templated:
        for name in _template_fields(data.image):
            needed[f"image template field '{name}'"] = name
    else:
        needed["image"] = data.image
    for role, column in needed.items():
        if column not in columns:
            raise ManifestError(
                f"{source}: no column {column!r} (the {role} column of the config); columns are: "
                f"{', '.join(columns)}{did_you_mean(column, columns)}"
            )

    known = tuple(classes) if classes is not None else data.classes
    real_root = Path(os.path.realpath(root))
    problems: list[str] = []
    records: list[Record] = []
    seen_ids: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):

        def problem(column: str, message: str, row_no: int = i) -> None:
            problems.append(f"row {row_no}, column {column!r}: {message}")

        try:
            rel = data.image.format_map(row) if templated else row[data.image]
        except (KeyError, ValueError, IndexError) as err:
            problem(data.image, f"cannot fill the image template ({err})")
            continue
        rel = (rel or "").strip()
        if not rel:
            problem(data.image, "empty image path")
            continue
        image_path = Path(rel)
        if not image_path.is_absolute():
            image_path = root / image_path
        if not allow_outside_root and not _inside(image_path, real_root):
            problem(
                data.image,
                f"image path {rel!r} leads outside the image root {root} (absolute paths, '..' "
                "and links out of the root are refused unless explicitly allowed)",
            )
            continue
        if check_files:
            reason = not_a_file(image_path)
            if reason is not None:
                problem(data.image, f"image {reason}")
        site = (row.get(data.site) or "").strip()
        if not site:
            problem(data.site, "empty site")
        group = (row.get(data.group) or "").strip()
        if not group:
            problem(data.group, "empty group (patient or lesion id)")
        label: str | None = (row.get(data.label) or "").strip() if data.label in row else None
        if label == "":
            label = None
        if require_labels and label is None:
            problem(data.label, "empty label")
        elif label is not None and known is not None and label not in known:
            problem(
                data.label,
                f"unknown label {label!r}; known classes: {', '.join(known)}"
                f"{did_you_mean(label, known)}",
            )
        image_id = (row.get(data.id) or "").strip() if data.id is not None else rel
        if not image_id:
            problem(data.id or data.image, "empty id")
        elif image_id in seen_ids:
            problem(
                data.id or data.image,
                f"duplicate id {image_id!r} (first on row {seen_ids[image_id]})",
            )
        else:
            seen_ids[image_id] = i
        records.append(Record(image_id, image_path, label, site, group, i))
        if len(problems) > 100:
            break

    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED])
        more = (
            f" (and {len(problems) - _MAX_REPORTED} more)" if len(problems) > _MAX_REPORTED else ""
        )
        raise ManifestError(f"{source}: {len(problems)} problem(s): {shown}{more}")
    if not records:
        raise ManifestError(f"{source}: the manifest has a header but no rows")

    if known is None:
        known = tuple(sorted({r.label for r in records if r.label is not None}))
    sites = tuple(sorted({r.site for r in records}))
    return Manifest(source, tuple(records), tuple(known), sites)


def _inside(path: Path, real_root: Path) -> bool:
    """Whether ``path``, links resolved, lies in ``real_root``."""
    try:
        Path(os.path.realpath(path)).relative_to(real_root)
    except ValueError:
        return False
    return True


def split_manifest_by_site(
    manifest: str | os.PathLike[str], folder: str | os.PathLike[str], *, site_column: str = "site"
) -> dict[str, Path]:
    """Write one CSV per site holding only that site's rows: ``<folder>/<site>/manifest.csv``.

    What each hospital of a federation holds (the federated demo and tests build their sites
    from one generated set this way). Columns and row order are kept; image paths stay as
    written, so the sites share the original image root.

    Raises:
        ManifestError: the CSV is empty or has no ``site_column``.
    """
    source = Path(manifest)
    with source.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        fields = list(reader.fieldnames or [])
    if not rows or site_column not in fields:
        raise ManifestError(f"{source}: no rows, or no column {site_column!r} to split by")
    out: dict[str, Path] = {}
    for site in sorted({r[site_column] for r in rows}):
        path = Path(folder) / site / "manifest.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = csv_text(
            fields, ([r.get(f) for f in fields] for r in rows if r[site_column] == site)
        )
        write_text_atomic(path, body)
        out[site] = path
    return out
