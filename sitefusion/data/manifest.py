"""CSV manifests: one row per image with its path, label, site and group (patient or lesion).

The column mapping comes from :class:`~sitefusion.config.DataConfig`. The image column may be a
plain column name or a template such as ``images/{image_id}.jpg`` filled from the row; relative
paths are resolved against the image root. Every problem is reported with the manifest's path,
the row number (1-based, header = row 1) and the column.
"""

from __future__ import annotations

import csv
import os
import stat
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


@dataclass(frozen=True, slots=True)
class Record:
    """One image of a manifest. ``label`` is ``None`` for unlabelled (scoring) manifests.

    ``image`` is the image file's path as a string (a million :class:`~pathlib.Path` objects
    would take half a gigabyte); :attr:`path` makes the ``Path`` when it is asked for.
    """

    id: str
    image: str | os.PathLike[str]
    label: str | None
    site: str
    group: str
    row: int

    @property
    def path(self) -> Path:
        """The image file."""
        return Path(self.image)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: records in file order, the class names and the site names.

    ``classes_from_labels``: the classes were not given (``data.classes`` unset, no run's
    classes) and are the sorted labels found, so a misspelt label became a class of its own.
    """

    source: Path
    records: tuple[Record, ...]
    classes: tuple[str, ...]
    sites: tuple[str, ...]
    classes_from_labels: bool = False

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
            self.source,
            tuple(r for r in self.records if r.id in keep),
            self.classes,
            self.sites,
            self.classes_from_labels,
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

    The file is read row by row (never held whole), and each image path costs one ``lstat``
    where its folder was seen before: a million rows validate in seconds.

    Args:
        path: the CSV file.
        data: the column mapping (``image``, ``label``, ``site``, ``group``, optional ``id``).
        image_root: directory that relative image paths are resolved against (default: the
            manifest's directory).
        classes: the known class names (for example a trained run's); a label outside them is an
            error. ``None`` takes ``data.classes`` or else the sorted labels found (and sets
            :attr:`Manifest.classes_from_labels`).
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
            # Cells escaped by sitefusion's own CSV writers (per-site manifests) read back as
            # the values they were; a spreadsheet's export has no such apostrophes.
            reader = (
                [unescape_cell(c) if c[:1] == "'" else c for c in row] for row in csv.reader(fh)
            )
            columns = next(reader, [])
            if not columns:
                raise ManifestError(f"{source}: the manifest is empty (no header row)")
            _check_columns(source, columns, data, require_labels)
            known = tuple(classes) if classes is not None else data.classes
            problems, records = _read_rows(
                reader,
                columns,
                data,
                _PathCheck(root, allow_outside_root, check_files),
                known,
                require_labels,
            )
    except FileNotFoundError as err:
        raise ManifestError(f"{source}: manifest file does not exist") from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ManifestError(f"{source}: cannot read the manifest as CSV ({err})") from err

    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED])
        more = (
            f" (and {len(problems) - _MAX_REPORTED} more)" if len(problems) > _MAX_REPORTED else ""
        )
        raise ManifestError(f"{source}: {len(problems)} problem(s): {shown}{more}")
    if not records:
        raise ManifestError(f"{source}: the manifest has a header but no rows")

    from_labels = known is None
    if known is None:
        known = tuple(sorted({r.label for r in records if r.label is not None}))
    sites = tuple(sorted({r.site for r in records}))
    return Manifest(source, tuple(records), tuple(known), sites, from_labels)


def _check_columns(
    source: Path, columns: list[str], data: DataConfig, require_labels: bool
) -> None:
    needed = {"site": data.site, "group": data.group}
    if require_labels:
        needed["label"] = data.label
    if data.id is not None:
        needed["id"] = data.id
    if "{" in data.image:
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


class _PathCheck:
    """Where an image path leads and whether it is a regular file, with one ``lstat`` per path:
    the real path of each folder is resolved once, and a file that is not a symbolic link lies
    where its folder does. Anything unusual takes the slow, exact path (:func:`_inside`,
    :func:`~sitefusion.io.not_a_file`), so the messages are those of a row-by-row check."""

    def __init__(self, root: Path, allow_outside_root: bool, check_files: bool) -> None:
        self.root = root
        self.root_str = str(root)
        self.real_root = Path(os.path.realpath(root))
        self.allow_outside_root = allow_outside_root
        self.check_files = check_files
        self._folders: dict[str, bool] = {}

    def problem(self, rel: str, full: str) -> tuple[str, bool] | None:
        """Why the image ``rel`` (``full``: joined to the root) is refused, and whether the row
        is checked no further (a path outside the root); ``None`` for a good path."""
        folder, name = os.path.split(full)
        st = None
        if not self.allow_outside_root or self.check_files:
            try:
                st = os.lstat(full)
            except OSError:
                st = None
        if not self.allow_outside_root:
            if name in ("", ".", "..") or st is None or stat.S_ISLNK(st.st_mode):
                inside = _inside(self.root / rel, self.real_root)
            elif folder in self._folders:
                inside = self._folders[folder]
            else:
                inside = self._folders[folder] = _inside(Path(folder), self.real_root)
            if not inside:
                return (
                    f"image path {rel!r} leads outside the image root {self.root} (absolute "
                    "paths, '..' and links out of the root are refused unless explicitly allowed)",
                    True,
                )
        if self.check_files and (st is None or not stat.S_ISREG(st.st_mode)):
            reason = not_a_file(self.root / rel)
            if reason is not None:
                return f"image {reason}", False
        return None


def _read_rows(
    reader: Iterator[list[str]],
    columns: list[str],
    data: DataConfig,
    paths: _PathCheck,
    known: tuple[str, ...] | None,
    require_labels: bool,
) -> tuple[list[str], list[Record]]:
    """Validate the rows as they are read; returns the problems (at most about 100) and the
    records. Row numbers count the header as row 1 and skip blank lines, as before."""
    index = {name: k for k, name in enumerate(columns)}
    width = len(columns)
    templated = "{" in data.image

    def cell(row: list[str], column: str | None) -> str:
        k = index.get(column) if column is not None else None
        return row[k].strip() if k is not None and k < len(row) else ""

    problems: list[str] = []
    records: list[Record] = []
    seen_ids: dict[str, int] = {}
    shared: dict[str, str] = {}  # one string object per distinct site, label, group
    known_set = set(known) if known is not None else None
    has_label = data.label in index
    i = 1
    for row in reader:
        if not row:
            continue
        i += 1
        if len(problems) > 100:
            break

        def problem(column: str, message: str, row_no: int = i) -> None:
            problems.append(f"row {row_no}, column {column!r}: {message}")

        if len(row) > width and any(c.strip() for c in row[width:]):
            problem(
                columns[-1],
                f"the row has {len(row)} cells, the header {width}: a cell with an unquoted "
                "comma shifts the columns (quote it)",
            )
            continue
        if templated:
            try:
                rel = data.image.format_map(dict(zip(columns, row, strict=False)))
            except (KeyError, ValueError, IndexError) as err:
                problem(data.image, f"cannot fill the image template ({err})")
                continue
            rel = rel.strip()
        else:
            rel = cell(row, data.image)
        if not rel:
            problem(data.image, "empty image path")
            continue
        full = rel if os.path.isabs(rel) else os.path.join(paths.root_str, rel)
        refused = paths.problem(rel, full)
        if refused is not None:
            problem(data.image, refused[0])
            if refused[1]:
                continue
        site = cell(row, data.site)
        if not site:
            problem(data.site, "empty site")
        group = cell(row, data.group)
        if not group:
            problem(data.group, "empty group (patient or lesion id)")
        label: str | None = cell(row, data.label) if has_label else None
        if label == "":
            label = None
        if require_labels and label is None:
            problem(data.label, "empty label")
        elif (
            label is not None
            and known is not None
            and known_set is not None
            and label not in known_set
        ):
            problem(
                data.label,
                f"unknown label {label!r}; known classes: {', '.join(known)}"
                f"{did_you_mean(label, known)}",
            )
        image_id = cell(row, data.id) if data.id is not None else rel
        if not image_id:
            problem(data.id or data.image, "empty id")
        elif image_id in seen_ids:
            problem(
                data.id or data.image,
                f"duplicate id {image_id!r} (first on row {seen_ids[image_id]})",
            )
        else:
            seen_ids[image_id] = i
        site = shared.setdefault(site, site)
        group = shared.setdefault(group, group)
        if label is not None:
            label = shared.setdefault(label, label)
        records.append(Record(image_id, full, label, site, group, i))
    return problems, records


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
