"""``score_inputs``: the nightly batch that scores a department's images with a trained run.

Pipeline (one concept per module, this one only chains them and owns resume, the journal, the
progress display and the summary):

1. load the run (hash-checked) and fit the out-of-distribution reference (:mod:`.ood`);
2. discover items (:mod:`.discovery`): files, DICOM instances or series, each with a content hash;
3. skip items already scored with the same content, run and options (:mod:`.outputs`);
4. read, conform and site-normalize each batch in reader processes (:mod:`.reader_pool`,
   :mod:`.reading`; threads where the platform does not fork): the next
   batch while the current one is predicted where the machine has cores the networks do not
   use (or the networks run on a GPU), else before it with every core (:func:`reading_plan`);
   each image passes once through each expert (:meth:`LoadedRun.predict`, inference mode);
5. per batch: fused probabilities and expert weights, OOD distances; per item: optional Grad-CAM
   (:mod:`.rows`, :mod:`.explain`); the row is journaled (flushed) as soon as the item is done,
   and the journal fsynced after every batch (in the background, while the next batch runs);
6. one DICOM SR per scored DICOM series (:mod:`.sr_files`, :mod:`.sr`); sorted ``scores.csv`` /
   ``scores.jsonl``; ``review.html`` beside them (:mod:`.review`).

Determinism (a resumed batch ends with the same rows as an uninterrupted one): batches are
padded to a fixed size before the experts run (a convolution's result can depend on the batch
size), and the fusion head and the OOD distance compute each row on its own (:mod:`.rows`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from sitefusion.atomic import ensure_writable_folder
from sitefusion.errors import SiteFusionError
from sitefusion.memory import keep_freed_memory
from sitefusion.methods import FUSION_METHOD_NAMES, LoadedRun
from sitefusion.rundir import RunDir
from sitefusion.scoring.discovery import ScoreItem, discover_items
from sitefusion.scoring.ood import run_ood
from sitefusion.scoring.outputs import ScoreStore, score_columns
from sitefusion.scoring.reader_pool import ReaderPool, Reads, can_fork_readers
from sitefusion.scoring.reading import ItemReader
from sitefusion.scoring.review import write_review
from sitefusion.scoring.rows import BatchScorer, redact_stored_row
from sitefusion.scoring.site_resolution import check_site_flag, check_site_map
from sitefusion.scoring.sr import PatientModule
from sitefusion.scoring.sr_files import SeriesReports

__all__ = ["ScoreSummary", "score_inputs"]

# Bumped when a change makes old rows invalid (part of every item's score key).
# 2: fusion probabilities temperature-scaled; 3: intensity checks; 4: the fusion head's linear
# maps row by row (last bits of the probabilities)
SCORER_VERSION = 4


@dataclass(frozen=True)
class ScoreSummary:
    """What a scoring batch did.

    ``items`` inputs found; ``ok`` / ``errors`` among their final rows; ``scored`` processed in
    this call, ``skipped`` already done by an earlier call; ``sr_written`` DICOM SR files
    written (or found unchanged), ``sr_failed`` series whose SR could not be built;
    ``review_path`` the review page (:mod:`.review`).
    """

    items: int
    ok: int
    errors: int
    scored: int
    skipped: int
    out_dir: Path
    csv_path: Path
    jsonl_path: Path
    run_id: str
    method: str
    seconds: float
    sr_written: int = 0
    sr_failed: int = 0
    explained: int = 0
    ood_threshold: float = float("nan")
    sr_errors: tuple[str, ...] = field(default_factory=tuple)
    review_path: Path | None = None

    @property
    def items_per_second(self) -> float:
        """Items processed in this call per second of wall time."""
        return self.scored / self.seconds if self.seconds > 0 else 0.0


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} items/s" if speed else "- items/s")


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ok {task.fields[ok]}  errors {task.fields[errors]}"),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=False,
    )


@dataclass(frozen=True)
class ReadingPlan:
    """How a batch's images are read: by ``readers`` readers, processes where the platform
    forks them (``processes``, :mod:`.reader_pool`) else threads, and whether the next batch
    is read while the current one is predicted (``ahead``) or before it."""

    readers: int
    ahead: bool
    processes: bool = True


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def reading_plan(workers: int, device: torch.device, cores: int | None = None) -> ReadingPlan:
    """Read ahead only on cores the networks leave free.

    On the CPU the networks run an OpenMP team of ``torch.get_num_threads()`` threads that meet
    at a barrier after every operation: a reader that takes a core from one of them stalls the
    whole team, and the networks slowed down more than the reading gained (2 cores, 2048
    HAM10000 images, reader processes: reading ahead 102 and 97 images/s, reading before each
    batch 126 and 125; docs/benchmarks.md). So with no spare core each batch is read first, by
    ``workers`` readers, while the networks wait; with spare cores (or the networks on a GPU)
    the next batch is read ahead by at most ``workers`` readers and no more than the spare
    cores. ``workers`` stays the bound in both cases because it also bounds the memory of
    reads in flight: one image at ``scoring.max_elements`` takes up to about 1 GiB to read.
    """
    workers = max(1, workers)
    processes = can_fork_readers()
    if device.type != "cpu":
        return ReadingPlan(workers, ahead=True, processes=processes)
    spare = (cores if cores is not None else _cores()) - torch.get_num_threads()
    if spare < 1:
        return ReadingPlan(workers, ahead=False, processes=processes)
    return ReadingPlan(min(workers, spare), ahead=True, processes=processes)


def _score_key(item: ScoreItem, run_id: str, site: str | None, convert: bool, explain: bool) -> str:
    blob = json.dumps(
        [SCORER_VERSION, item.content_sha256, run_id, site, convert, explain], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _needs_scoring(row: dict[str, Any], key: str, explain: bool, out: Path) -> bool:
    """Whether an item is scored (again): no row with its current key, or, with ``explain``,
    a scored row whose pictures are missing (not written, e.g. for a full disk, or deleted
    since): those are retried on every rerun until they are written."""
    if row.get("score_key") != key:
        return True
    if not explain or row.get("status") != "ok":
        return False
    paths = row.get("explanation")
    if not isinstance(paths, list) or not paths:
        return True
    return not all((out / str(p)).is_file() for p in paths)


def score_inputs(
    run_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    site: str | None = None,
    explain: bool = False,
    convert_colour: bool = False,
    console: Console | None = None,
    workers: int = 2,
    batch_size: int | None = None,
    sr_patient: PatientModule = "source",
) -> ScoreSummary:
    """Score every input with a finished run and write ``scores.csv`` / ``scores.jsonl``.

    Args:
        run_dir: a complete, hash-checked run directory.
        inputs: files and folders (walked recursively); see :mod:`sitefusion.scoring.discovery`.
        out_dir: output folder; a rerun into the same folder resumes (skips finished items).
        site: the site of every input (``--site``); else resolved from DICOM tags via the run's
            ``scoring.site_map``, else the run's unseen-site policy.
        explain: also write a Grad-CAM overlay and an expert-weight chart per scored item.
        convert_colour: convert grey <-> RGB to the run's channel count instead of refusing.
        console: where the progress bar goes (``None``: silent).
        workers: readers, processes where the platform forks them (at most;
            :func:`reading_plan`); they also bound the memory of the reads in flight.
        batch_size: images per expert forward pass (default: the run's ``scoring.batch_size``).
        sr_patient: ``"source"`` (default) gives each SR the source's patient module, as the
            archive the images came from files it; ``"blank"`` for SRs that leave the
            hospital (:mod:`sitefusion.scoring.sr`).

    Returns:
        :class:`ScoreSummary`. Items that cannot be scored are error rows, never exceptions.

    Raises:
        ArtifactError: the run cannot be loaded (missing, incomplete, changed files).
        UnknownChoiceError: ``site`` is not one of the run's sites, or ``site_map`` names a tag
            that is not used for site resolution.
        SiteFusionError: ``out_dir`` holds another run's scores or is being written by another
            batch.
        OutputFolderError: ``out_dir`` is, or lies inside, the run directory.
    """
    t0 = time.perf_counter()
    keep_freed_memory()  # the batch loop reuses its large blocks instead of faulting them in
    RunDir(Path(run_dir)).refuse_output_inside(out_dir, "output folder")
    out = ensure_writable_folder(out_dir)  # before the run is loaded: a bad --out fails fast
    # Scoring reads the site experts and a fusion head only: the baselines' networks stay unbuilt.
    run = LoadedRun(Path(run_dir), methods=FUSION_METHOD_NAMES.values())
    method = run.fusion().name
    check_site_flag(site, run.expert_sites)
    site_map = run.cfg.scoring.site_map
    check_site_map(site_map)
    ood = run_ood(run, run.cfg.scoring.ood_quantile)
    size = int(batch_size or run.cfg.scoring.batch_size)
    if size < 1:
        raise SiteFusionError(f"batch_size is {size}; expected a positive integer")
    columns = score_columns(run.classes, run.expert_sites)
    reader = ItemReader(
        run=run, site=site, site_map=site_map, convert_colour=convert_colour, out=out
    )
    scorer = BatchScorer(run=run, method=method, ood=ood, out=out, explain=explain)
    reports = SeriesReports(run=run, method=method, out=out, sr_patient=sr_patient)
    plan = reading_plan(workers, run.device)

    with (
        warnings.catch_warnings(),
        ScoreStore(out, run_id=run.run_id, run_dir=str(run.root), columns=columns) as store,
        _progress(console) as progress,
    ):
        # Library warnings can quote header values; scoring reports problems as rows instead.
        warnings.simplefilter("ignore")
        finding = progress.add_task("finding inputs", total=None, ok="-", errors="-")
        discovery = discover_items(
            inputs,
            volumetric=len(run.spatial_size) == 3,
            exclude=out,
            workers=workers,
            on_file=lambda k: progress.advance(finding, k),
        )
        progress.update(finding, total=progress.tasks[finding].completed)
        # Every path of the batch is redacted with the identifiers of every DICOM header met,
        # whatever the item's format: a photo in the patient's folder carries the name too.
        # (One shared set: an item's own identifiers are among them, and the redactor's index
        # is built once per set.)
        items = [replace(it, identifiers=discovery.identifiers) for it in discovery.items]
        by_id = {it.item_id: it for it in items}
        keys = {
            it.item_id: _score_key(it, run.run_id, site, convert_colour, explain) for it in items
        }
        pending = [
            it
            for it in items
            if _needs_scoring(store.rows.get(it.item_id, {}), keys[it.item_id], explain, out)
        ]
        done_before = len(items) - len(pending)
        task = progress.add_task("scoring", total=len(items), ok=0, errors=0)
        progress.advance(task, done_before)
        counts = {"ok": 0, "error": 0, "explained": 0}

        def finished(row: dict[str, Any]) -> None:
            store.append(row, fsync=False)
            counts["ok" if row["status"] == "ok" else "error"] += 1
            counts["explained"] += bool(row.get("explanation"))
            progress.update(task, advance=1, ok=counts["ok"], errors=counts["error"])

        chunks = [pending[i : i + size] for i in range(0, len(pending), size)]

        # Started after discovery: forked readers then do not inherit discovery's threads.
        readers = ReaderPool(reader, plan.readers, plan.processes)
        upcoming: Reads | None = readers.submit(chunks[0]) if chunks else None
        try:
            for index in range(len(chunks)):
                current = upcoming
                after = chunks[index + 1] if index + 1 < len(chunks) else []
                upcoming = readers.submit(after) if plan.ahead and after else None
                loaded = readers.results(current) if current is not None else []
                scorer.score_batch(loaded, size, keys, finished)
                store.sync_in_background()  # overlaps the next batch; close() waits for it
                if not plan.ahead and after:
                    upcoming = readers.submit(after)
        finally:  # interrupted: do not wait for reads nobody will score
            if upcoming is not None:
                upcoming.cancel()
            readers.close(cancel=True)

        sr_task = progress.add_task("DICOM SR", total=None, ok="-", errors="-")
        sr_paths, sr_errors = reports.write_reports(items, store.rows)
        progress.update(sr_task, total=len(sr_paths) + len(sr_errors), completed=len(sr_paths))

        def with_sr(row: dict[str, Any]) -> dict[str, Any]:
            if row.get("item") in by_id:  # rows of earlier calls: what this batch knows
                row = redact_stored_row(row, by_id[row["item"]], out)
            series = row.get("series_uid")
            if row.get("status") == "ok" and series in sr_paths:
                row["sr"] = sr_paths[series]
            elif row.get("sr") and not (out / str(row["sr"])).exists():
                row["sr"] = None
            return row

        final = {r["item"]: r for r in store.finalize(with_sr, keep=set(keys))}
        review = write_review(
            [final[it.item_id] for it in items if it.item_id in final],
            out,
            classes=run.classes,
            sites=run.expert_sites,
            run_id=run.run_id,
            method=method,
        )

    current_rows = [final[it.item_id] for it in items if it.item_id in final]
    ok = sum(1 for r in current_rows if r.get("status") == "ok")
    return ScoreSummary(
        items=len(items),
        ok=ok,
        errors=len(current_rows) - ok,
        scored=len(pending),
        skipped=done_before,
        out_dir=out,
        csv_path=store.csv_path,
        jsonl_path=store.jsonl_path,
        review_path=review,
        run_id=run.run_id,
        method=method,
        seconds=time.perf_counter() - t0,
        sr_written=len(sr_paths),
        sr_failed=len(sr_errors),
        explained=counts["explained"],
        ood_threshold=ood.threshold_,
        sr_errors=tuple(sr_errors),
    )
