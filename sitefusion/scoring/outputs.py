"""The output folder of a scoring batch: an append-only journal, then sorted CSV and JSONL.

* ``scores.jsonl`` is the journal while the batch runs: one JSON object per finished item,
  appended and flushed at once (so a ``kill -9`` loses nothing already scored) and fsynced at
  the end of every batch, in a background thread while the next batch is predicted (so a power
  cut loses at most the batch in flight and the one before it). A line cut short by a kill is
  dropped when the folder is opened again.
* On resume the latest row of each item (``item`` column) is known; the batch skips items whose
  ``score_key`` (content hash, run id and options) is unchanged.
* At the end both files are rewritten atomically from the journal: the latest row per item,
  sorted by input path and series UID, so an interrupted-and-resumed batch ends with the same
  files as an uninterrupted one.
* ``scoring.json`` records the run that wrote the folder; another run's scores are refused (their
  columns differ: one ``prob_`` per class, one ``weight_`` per expert).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sitefusion.atomic import lock_folder
from sitefusion.csvcells import escape_cell
from sitefusion.errors import OutputFolderError, SiteFusionError
from sitefusion.rundir import atomic_write

__all__ = [
    "CSV_NAME",
    "JSONL_NAME",
    "META_NAME",
    "ScoreStore",
    "publish",
    "rows_to_csv",
    "score_columns",
]

CSV_NAME = "scores.csv"
JSONL_NAME = "scores.jsonl"
META_NAME = "scoring.json"
_LOCK_NAME = ".scoring.lock"
_FORMAT = "sitefusion.scores"
_VERSION = 1


def _umask() -> int:
    """The process umask, read without changing it where Linux exposes it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no race-free way elsewhere: set and restore at once
    os.umask(mask)
    return mask


def publish(path: Path) -> Path:
    """Give a finished output file the permissions a plain ``open()`` would have.

    Atomic writes go through ``mkstemp``, which creates files readable by their owner only;
    the people and services that read the scores (PACS import, other users) get what the
    umask allows, as with any file the batch creates.
    """
    os.chmod(path, 0o666 & ~_umask())
    return path


def score_columns(classes: Sequence[str], sites: Sequence[str]) -> list[str]:
    """Column order of ``scores.csv`` for a run with these classes and experts."""
    return [
        "input",
        "status",
        "error",
        "prediction",
        *[f"prob_{c}" for c in classes],
        *[f"weight_{s}" for s in sites],
        "method",
        "temperature",
        "site",
        "site_source",
        "norm_site",
        "norm_policy",
        "ood_score",
        "ood_flag",
        "ood_reason",
        "run_id",
        "study_uid",
        "series_uid",
        "sop_uids",
        "explanation",
        "sr",
        "item",
        "input_sha256",
        "score_key",
    ]


def printable(value: Any) -> Any:
    """``value`` with every text made writable as UTF-8: a file name that is not valid UTF-8
    (Python holds its bytes as surrogates) gets each such byte as ``\\xNN``, as Python's
    ``backslashreplace`` writes it, so the original bytes can be told and recovered."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(value).decode("utf-8", errors="backslashreplace")
        return value
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An ``OSError`` while writing ``path`` (a full disk, say) becomes an error naming it."""
    try:
        yield
    except OSError as err:
        if isinstance(err, SiteFusionError):
            raise
        raise OutputFolderError(
            f"{path}: cannot write: {err.strerror or err}; the rows journaled so far are kept, "
            "and the same command resumes once the problem is fixed"
        ) from err


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(_csv_value(v) for v in value)
    return escape_cell(value) if isinstance(value, str) else str(value)


class ScoreStore:
    """Journal and final files of one output folder.

    Use as a context manager (it holds an exclusive lock on the folder while open)::

        with ScoreStore(out, run_id=..., run_dir=..., columns=...) as store:
            done = store.rows          # item -> latest row, from a previous batch
            store.append(row)          # journal one finished item (fsynced)
            store.finalize()           # sorted scores.jsonl and scores.csv
    """

    def __init__(
        self, out_dir: str | Path, *, run_id: str, run_dir: str, columns: Sequence[str]
    ) -> None:
        self.out_dir = Path(out_dir)
        self.run_id = run_id
        self.run_dir = run_dir
        self.columns = list(columns)
        self.rows: dict[str, dict[str, Any]] = {}
        self._fh: IO[str] | None = None
        self._lock: IO[bytes] | None = None
        self._syncer: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    @property
    def jsonl_path(self) -> Path:
        return self.out_dir / JSONL_NAME

    @property
    def csv_path(self) -> Path:
        return self.out_dir / CSV_NAME

    # -- opening ---------------------------------------------------------------------------------
    def __enter__(self) -> ScoreStore:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._check_meta()
            self.rows = self._read_journal()
            self._fh = self.jsonl_path.open("a", encoding="utf-8")
        except BaseException:
            self._release_lock()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Finish a background fsync, close the journal and release the folder lock."""
        try:
            self._wait_for_sync()
        finally:
            if self._syncer is not None:
                self._syncer.shutdown()
                self._syncer = None
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            self._release_lock()

    def _acquire_lock(self) -> None:
        self._lock = lock_folder(
            self.out_dir / _LOCK_NAME,
            f"{self.out_dir}: another scoring batch is writing to this folder; wait for it "
            "or use another --out",
        )

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def _check_meta(self) -> None:
        path = self.out_dir / META_NAME
        if path.exists():
            try:
                meta = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise SiteFusionError(f"{path}: unreadable scoring metadata ({err})") from err
            other = meta.get("run_id") if isinstance(meta, dict) else None
            if other != self.run_id:
                raise SiteFusionError(
                    f"{self.out_dir}: holds scores of run {other!r}, not of run "
                    f"{self.run_id!r}; use another --out for this run"
                )
            return
        with _naming(path), atomic_write(path) as fh:
            json.dump(
                {
                    "format": _FORMAT,
                    "version": _VERSION,
                    "run_id": self.run_id,
                    "run_dir": self.run_dir,
                    "columns": self.columns,
                },
                fh,
                indent=2,
            )
        publish(path)

    def _read_journal(self) -> dict[str, dict[str, Any]]:
        """Latest row per item; a last line cut short by a kill is truncated away."""
        path = self.jsonl_path
        if not path.exists():
            return {}
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with path.open("r+b") as fh:
                fh.truncate(end)
                fh.flush()
                os.fsync(fh.fileno())
            data = data[:end]
        rows: dict[str, dict[str, Any]] = {}
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line: its item is simply scored again
            if isinstance(row, dict) and isinstance(row.get("item"), str):
                rows[row["item"]] = row
        return rows

    # -- writing ---------------------------------------------------------------------------------
    def append(self, row: Mapping[str, Any], *, fsync: bool = True) -> None:
        """Journal one finished item: one JSON line, flushed to the OS before returning.

        A flushed line survives ``kill -9`` (the kernel holds it); ``fsync`` also makes it
        survive a power cut. The batch passes ``fsync=False`` and calls :meth:`sync` once per
        batch: the rows of a batch finish together, and one fsync per row cost about 10-20 % of
        the scoring time on a loaded disk.
        """
        if self._fh is None:
            raise SiteFusionError("ScoreStore.append called outside its `with` block")
        record = {c: printable(row.get(c)) for c in self.columns}
        with _naming(self.jsonl_path):
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()
            if fsync:
                os.fsync(self._fh.fileno())
        self.rows[str(record["item"])] = record

    def sync(self) -> None:
        """fsync the journal (everything appended so far is on disk)."""
        self._wait_for_sync()
        if self._fh is not None:
            with _naming(self.jsonl_path):
                self._fh.flush()
                os.fsync(self._fh.fileno())

    def sync_in_background(self) -> None:
        """Start an fsync of everything appended so far in a background thread and return.

        The batch calls this after each batch: the rows are flushed already (they survive a
        kill), and the disk's fsync, often milliseconds, then overlaps the next batch's
        prediction instead of stalling it. One fsync is outstanding at most: this waits for the
        previous one (and raises its error); :meth:`sync` and :meth:`close` wait for it too.
        """
        self._wait_for_sync()
        if self._fh is None:
            return
        self._fh.flush()
        if self._syncer is None:
            self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-fsync")
        self._pending = self._syncer.submit(os.fsync, self._fh.fileno())

    def _wait_for_sync(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def final_rows(
        self,
        update: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        keep: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The latest row per item, sorted by ``(input, series_uid, item)``; ``update`` may
        rewrite derived columns (e.g. ``sr``) of each row; ``keep``: only these items."""
        rows = [dict(r) for k, r in self.rows.items() if keep is None or k in keep]
        if update is not None:
            rows = [update(r) for r in rows]
        return sorted(
            rows, key=lambda r: (r.get("input") or "", r.get("series_uid") or "", r["item"])
        )

    def finalize(
        self,
        update: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        keep: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rewrite ``scores.jsonl`` and ``scores.csv`` (atomically) from the latest rows.

        ``keep``: the items of the batch being finished. The files then hold exactly that
        batch: rows of inputs that are gone, or of another batch scored into the same folder
        before, are dropped, so the summary line and the files always agree.
        """
        self._wait_for_sync()  # the journal's descriptor must outlive its fsync
        rows = self.final_rows(update, keep)
        self.rows = {str(r["item"]): r for r in rows}
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        with _naming(self.jsonl_path), atomic_write(self.jsonl_path) as fh:
            for row in rows:
                fh.write(json.dumps({c: row.get(c) for c in self.columns}, ensure_ascii=False))
                fh.write("\n")
        with _naming(self.csv_path), atomic_write(self.csv_path) as fh:
            fh.write(rows_to_csv(rows, self.columns))
        publish(self.jsonl_path)
        publish(self.csv_path)
        self._fh = self.jsonl_path.open("a", encoding="utf-8")
        return rows


def rows_to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of rows: lists joined with ``;``, booleans ``true``/``false``, ``None`` empty,
    and text cells through :func:`sitefusion.csvcells.escape_cell` (a cell a spreadsheet would
    evaluate gets a leading ``'``), the rule of every CSV sitefusion writes. ``scores.jsonl``
    keeps the values as they are: JSON is data, never evaluated."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return buf.getvalue()
