"""``score_inputs``: the nightly batch that scores a department's images with a trained run.

Pipeline (one concept per module, this one only chains them):

1. load the run (hash-checked) and fit the out-of-distribution reference (:mod:`.ood`);
2. discover items (:mod:`.discovery`): files, DICOM instances or series, each with a content hash;
3. skip items already scored with the same content, run and options (:mod:`.outputs`);
4. read and conform the next batch in a thread pool while the current batch is predicted;
   each image passes once through each expert (:meth:`LoadedRun.predict`, inference mode);
5. per item: fused probabilities and expert weights, OOD distance, optional Grad-CAM
   (:mod:`.explain`); the row is journaled (flushed) as soon as the item is done, and the
   journal fsynced after every batch;
6. one DICOM SR per scored DICOM series (:mod:`.sr`); sorted ``scores.csv`` / ``scores.jsonl``.

Determinism (a resumed batch ends with the same rows as an uninterrupted one): batches are
padded to a fixed size before the experts run (a convolution's result can depend on the batch
size), and the fusion head and the OOD distance are computed per item.

Why this module is long: it is the whole batch-scoring job (discovery, reading in threads,
site resolution, one fused pass per padded batch, per-item rows, OOD, Grad-CAM, SRs, resume),
the workflow of the ``score`` command; its parts are in the sibling modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.uid import generate_uid
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
from sitefusion.data import conform
from sitefusion.errors import ImageReadError, SiteFusionError
from sitefusion.io import read_dicom, read_dicom_series, read_image
from sitefusion.io.dicom import read_dicom_dataset
from sitefusion.methods import LoadedRun
from sitefusion.rundir.environment import package_version
from sitefusion.scoring.discovery import ScoreItem, discover_items, valid_uid
from sitefusion.scoring.explain import GradCamExplainer
from sitefusion.scoring.ood import run_ood
from sitefusion.scoring.outputs import ScoreStore, score_columns
from sitefusion.scoring.redaction import Redactor
from sitefusion.scoring.site_resolution import (
    SiteResolution,
    check_site_flag,
    check_site_map,
    resolve_site,
)
from sitefusion.scoring.sr import (
    PatientModule,
    SrFinding,
    build_series_sr,
    evidence_header,
    instance_reference,
    sr_uids,
    write_series_sr,
)

__all__ = ["ScoreSummary", "score_inputs"]

# Bumped when a change makes old rows invalid (part of every item's score key).
SCORER_VERSION = 3  # 2: fusion probabilities temperature-scaled; 3: intensity checks
_ROUND_PROB = 6
_ROUND_OOD = 4


@dataclass(frozen=True)
class ScoreSummary:
    """What a scoring batch did.

    ``items`` inputs found; ``ok`` / ``errors`` among their final rows; ``scored`` processed in
    this call, ``skipped`` already done by an earlier call; ``sr_written`` DICOM SR files
    written (or found unchanged), ``sr_failed`` series whose SR could not be built.
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

    @property
    def items_per_second(self) -> float:
        """Items processed in this call per second of wall time."""
        return self.scored / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Loaded:
    """One item after reading: the conformed array ``[C, *S]`` or the reason it failed."""

    item: ScoreItem
    array: np.ndarray | None = None
    error: str | None = None
    resolution: SiteResolution | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uids: tuple[str, ...] = ()


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


def _document_time(completed_at: str | None, study: Any) -> datetime:
    """The time an SR states it was made: when the run was finished; for a run from before that
    was recorded, the source study's date and time (else the epoch). Never the clock, so that
    the same scores give the same document."""
    if completed_at:
        try:
            return datetime.strptime(completed_at, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            pass
    date, clock = str(study.get("StudyDate", "")), str(study.get("StudyTime", ""))[:6]
    for text, pattern in ((date + clock, "%Y%m%d%H%M%S"), (date, "%Y%m%d")):
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    return datetime(1970, 1, 1)


def _score_key(item: ScoreItem, run_id: str, site: str | None, convert: bool, explain: bool) -> str:
    blob = json.dumps(
        [SCORER_VERSION, item.content_sha256, run_id, site, convert, explain], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:48] or "item"


def _fit_problem(item: ScoreItem, image: Any, spatial_dims: int, channels: int) -> str | None:
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


def _reader_thread() -> None:
    """Reader threads resize with torch single-threaded (the setting is per thread with
    OpenMP): each thread's parallel region would otherwise start its own team, and the readers'
    teams and the experts' team would oversubscribe the cores."""
    import torch

    # With another backend (native, TBB) the thread count is process-wide: leave it alone.
    if "ATen parallel backend: OpenMP" in torch.__config__.parallel_info():
        torch.set_num_threads(1)


def _read(item: ScoreItem, max_elements: int) -> Any:
    if item.kind == "dicom-instance":
        return read_dicom(item.files[0], max_elements=max_elements)
    if item.kind == "dicom-series":
        return read_dicom_series(list(item.files), max_elements=max_elements)
    return read_image(item.files[0], max_elements=max_elements)


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
        workers: reader threads.
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
    """
    t0 = time.perf_counter()
    out = ensure_writable_folder(out_dir)  # before the run is loaded: a bad --out fails fast
    run = LoadedRun(Path(run_dir))
    method = run.fusion().name
    check_site_flag(site, run.expert_sites)
    site_map = run.cfg.scoring.site_map
    check_site_map(site_map)
    ood = run_ood(run, run.cfg.scoring.ood_quantile)
    size = int(batch_size or run.cfg.scoring.batch_size)
    if size < 1:
        raise SiteFusionError(f"batch_size is {size}; expected a positive integer")
    columns = score_columns(run.classes, run.expert_sites)
    ctx = _Context(
        run=run,
        method=method,
        ood=ood,
        out=out,
        site=site,
        site_map=site_map,
        convert_colour=convert_colour,
        explain=explain,
        sr_patient=sr_patient,
    )

    with (
        warnings.catch_warnings(),
        ScoreStore(out, run_id=run.run_id, run_dir=str(run.root), columns=columns) as store,
        _progress(console) as progress,
        ThreadPoolExecutor(max_workers=max(1, workers), initializer=_reader_thread) as pool,
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
        items = discovery.items
        keys = {
            it.item_id: _score_key(it, run.run_id, site, convert_colour, explain) for it in items
        }
        pending = [
            it
            for it in items
            if store.rows.get(it.item_id, {}).get("score_key") != keys[it.item_id]
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

        def submit(chunk: list[ScoreItem]) -> list[Future[_Loaded]]:
            return [pool.submit(ctx.load, it) for it in chunk]

        # The next batch is read while the current one is predicted.
        upcoming = submit(chunks[0]) if chunks else []
        try:
            for index in range(len(chunks)):
                current = upcoming
                upcoming = submit(chunks[index + 1]) if index + 1 < len(chunks) else []
                loaded = [f.result() for f in current]
                ctx.score_batch(loaded, size, keys, finished)
                store.sync()
        finally:  # interrupted: do not wait for reads nobody will score
            for future in upcoming:
                future.cancel()

        sr_task = progress.add_task("DICOM SR", total=None, ok="-", errors="-")
        sr_paths, sr_errors = ctx.write_reports(items, store.rows)
        progress.update(sr_task, total=len(sr_paths) + len(sr_errors), completed=len(sr_paths))

        def with_sr(row: dict[str, Any]) -> dict[str, Any]:
            series = row.get("series_uid")
            if row.get("status") == "ok" and series in sr_paths:
                row["sr"] = sr_paths[series]
            elif row.get("sr") and not (out / str(row["sr"])).exists():
                row["sr"] = None
            return row

        final = {r["item"]: r for r in store.finalize(with_sr, keep=set(keys))}

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
        run_id=run.run_id,
        method=method,
        seconds=time.perf_counter() - t0,
        sr_written=len(sr_paths),
        sr_failed=len(sr_errors),
        explained=counts["explained"],
        ood_threshold=ood.threshold_,
        sr_errors=tuple(sr_errors),
    )


@dataclass
class _Context:
    """Everything the per-batch steps share: the run, the scored method, options, OOD model."""

    run: LoadedRun
    method: str
    ood: Any
    out: Path
    site: str | None
    site_map: Any
    convert_colour: bool
    explain: bool
    sr_patient: PatientModule = "source"
    _explainer: Any = None

    # -- reading (runs in the thread pool) -------------------------------------------------------
    def load(self, item: ScoreItem) -> _Loaded:
        """Read, check and conform one item; never raises."""
        result = _Loaded(
            item, study_uid=item.study_uid, series_uid=item.series_uid, sop_uids=item.sop_uids
        )
        if item.error is not None:
            result.error = item.error
            return result
        try:
            image = _read(item, self.run.cfg.scoring.max_elements)
            meta = image.metadata
            result.study_uid = valid_uid(meta.get("StudyInstanceUID")) or item.study_uid
            result.series_uid = valid_uid(meta.get("SeriesInstanceUID")) or item.series_uid
            sops = meta.get("SOPInstanceUIDs")
            if isinstance(sops, list) and sops:
                result.sop_uids = tuple(u for u in map(valid_uid, sops) if u)
            problem = _fit_problem(item, image, len(self.run.spatial_size), self.run.channels)
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
        return result

    # -- scoring (main thread) -------------------------------------------------------------------
    def _row(self, loaded: _Loaded, key: str) -> dict[str, Any]:
        item = loaded.item
        redact = Redactor(item.identifiers)
        return {
            "input": redact(item.input),
            "status": "error" if loaded.error else "ok",
            "error": redact(loaded.error) if loaded.error else None,
            "run_id": self.run.run_id,
            "method": self.method,
            "temperature": self.run.temperature(self.method),
            "study_uid": loaded.study_uid,
            "series_uid": loaded.series_uid,
            "sop_uids": list(loaded.sop_uids) or None,
            "item": item.item_id,
            "input_sha256": item.content_sha256 or None,
            "score_key": key,
        }

    def score_batch(
        self,
        batch: list[_Loaded],
        size: int,
        keys: dict[str, str],
        finished: Callable[[dict[str, Any]], None],
    ) -> None:
        """Predict the readable items of one batch and hand every item's row to ``finished``."""
        ready = [b for b in batch if b.array is not None]
        for b in batch:
            if b.array is None:
                finished(self._row(b, keys[b.item.item_id]))
        if not ready:
            return
        try:
            preds = self._predict(ready, size)
        except Exception:  # e.g. a normalizer refusing a degenerate image: find which one
            for b in ready:
                try:
                    single = self._predict([b], size)
                except Exception as err:
                    b.error = (
                        f"{b.item.input}: prediction failed: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}"
                    )
                    finished(self._row(b, keys[b.item.item_id]))
                else:
                    finished(self._scored_row(b, 0, single, keys[b.item.item_id]))
            return
        for i, b in enumerate(ready):
            finished(self._scored_row(b, i, preds, keys[b.item.item_id]))

    def _predict(self, ready: list[_Loaded], size: int) -> Any:
        """Expert features and normalization of ``ready`` (conformed) items, in their order.

        The batch is padded to ``size`` with copies of its first image: a convolution's result
        can depend on the batch size, so an image's features never depend on how many others
        share its batch (a resumed batch reproduces the uninterrupted one exactly).
        """
        arrays = [b.array for b in ready if b.array is not None]
        sites = [b.resolution.site if b.resolution else None for b in ready]
        pad = size - len(arrays)
        images = np.stack(arrays + [arrays[0]] * pad)
        # Only the experts and the scored fusion: scoring reads nothing else.
        return self.run.predict(
            images, sites + [sites[0]] * pad, batch_size=size, methods=[self.method]
        )

    def _scored_row(self, b: _Loaded, i: int, preds: Any, key: str) -> dict[str, Any]:
        feats = preds.features
        # The head per item: batched matrix products could differ in the last bits.
        one = self.run.predict_rows(preds, slice(i, i + 1), self.method, calibrated=True)
        if one is None or one.weights is None:
            raise SiteFusionError(f"{self.method} gave no prediction for {b.item.input}")
        probs = np.asarray(one.probs[0], dtype=np.float64)
        weights = np.asarray(one.weights[0], dtype=np.float64)
        distance = float(self.ood.score(feats.features[i : i + 1])[0])
        # Intensities the normalizer cannot represent come first: such an image is flagged
        # whatever its feature distance (which a constant image can make look ordinary).
        intensity = self._intensity_problem(b)
        far = distance > self.ood.threshold_
        reason = intensity or (
            f"feature distance {distance:.4g} above the run's threshold {self.ood.threshold_:.4g}"
            if far
            else None
        )
        k = int(np.argmax(probs))
        row = self._row(b, key)
        resolution = b.resolution or SiteResolution(None, "unseen-policy")
        row.update(
            {
                "prediction": self.run.classes[k],
                **{
                    f"prob_{c}": round(float(p), _ROUND_PROB)
                    for c, p in zip(self.run.classes, probs, strict=True)
                },
                **{
                    f"weight_{s}": round(float(w), _ROUND_PROB)
                    for s, w in zip(self.run.expert_sites, weights, strict=True)
                },
                "site": resolution.site,
                "site_source": resolution.source,
                "norm_site": preds.norm_site[i],
                "norm_policy": preds.norm_policy[i],
                "ood_score": round(distance, _ROUND_OOD),
                "ood_flag": bool(far or intensity),
                "ood_reason": reason,
            }
        )
        if self.explain:
            try:
                row["explanation"] = self._explain(b, weights, k, probs)
            except Exception as err:  # the score stands without its picture
                row["error"] = Redactor(b.item.identifiers)(
                    f"{b.item.input}: explanation failed: {type(err).__name__}: {err}"
                )
        return row

    def _intensity_problem(self, b: _Loaded) -> str | None:
        # The item's image normalized once more, as predict did: one per item, cheap beside
        # the experts.
        if b.array is None:
            return None
        requested = b.resolution.site if b.resolution else None
        normalized = self.run.bank.transform(b.array, requested)
        return self.run.bank.intensity_problem(b.array, normalized)

    def _explain(self, b: _Loaded, weights: np.ndarray, k: int, probs: np.ndarray) -> list[str]:
        if self._explainer is None:
            # The fusion's own (fine-tuned) expert copies where it has them: those are the
            # networks whose weights the fusion relied on.
            self._explainer = GradCamExplainer(
                self.run.fusion(self.method).networks or self.run.experts,
                self.run.expert_sites,
                self.run.classes,
                (self.run.channels, *self.run.spatial_size),
            )
        if b.array is None:
            raise SiteFusionError("no image to explain")
        image = b.array
        requested = b.resolution.site if b.resolution else None
        normalized = self.run.bank.transform(image, requested).array
        name = Path(Redactor(b.item.identifiers)(b.item.input)).name
        key = f"{_slug(name)}-{b.item.item_id[:10]}"
        paths: list[str] = self._explainer.explain(
            self.out,
            key,
            image=image,
            normalized=normalized,
            weights=weights,
            class_index=k,
            probability=float(probs[k]),
        )
        return paths

    # -- DICOM SR --------------------------------------------------------------------------------
    def write_reports(
        self, items: Sequence[ScoreItem], rows: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, str], list[str]]:
        """One SR per DICOM series with at least one ``ok`` row among ``items``.

        Returns ``{series_uid: relative SR path}`` and the (redacted) reasons of failures.
        """
        by_series: dict[str, list[ScoreItem]] = {}
        for it in items:
            row = rows.get(it.item_id)
            if (
                it.kind.startswith("dicom")
                and row is not None
                and row.get("status") == "ok"
                and row.get("series_uid")
            ):
                by_series.setdefault(str(row["series_uid"]), []).append(it)
        written: dict[str, str] = {}
        failures: list[str] = []
        for series_uid, members in sorted(by_series.items()):
            rel = f"sr/{re.sub(r'[^0-9A-Za-z.]', '_', series_uid)}.dcm"
            try:
                self._write_report(self.out / rel, series_uid, members, rows)
            except Exception as err:  # an SR problem never loses the scores
                redact = Redactor(frozenset().union(*(m.identifiers for m in members)))
                failures.append(
                    redact(f"series {series_uid}: SR not written: {type(err).__name__}: {err}")
                )
                continue
            written[series_uid] = rel
        return written, failures

    def _write_report(
        self,
        path: Path,
        series_uid: str,
        members: list[ScoreItem],
        rows: dict[str, dict[str, Any]],
    ) -> None:
        run = self.run
        members = sorted(members, key=lambda it: it.sort_key)
        # The patient-module choice is part of the document: another choice, another instance.
        sr_series, sr_instance = sr_uids(
            run.run_id,
            series_uid,
            [str(rows[m.item_id]["score_key"]) for m in members] + [f"patient:{self.sr_patient}"],
        )
        if path.exists():
            try:
                existing = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                if str(existing.get("SOPInstanceUID", "")) == sr_instance:
                    return  # same scores, same document
            except Exception:  # unreadable: rewritten below
                pass
        # One header read per series: the study and (blank) patient attributes are shared, each
        # instance only adds its UIDs (known from discovery).
        template = evidence_header(
            read_dicom_dataset(members[0].files[0], stop_before_pixels=True), self.sr_patient
        )
        findings = []
        for m in members:
            row = rows[m.item_id]
            classes = dict(m.sop_classes)
            order = [str(s) for s in row.get("sop_uids") or m.sop_uids]
            sources = tuple(
                instance_reference(template, series_uid, s, classes[s])
                for s in order
                if s in classes
            )
            if not sources:
                raise SiteFusionError(f"{m.input}: no SOP Class/Instance UID to reference")
            findings.append(
                SrFinding(
                    sources=sources,
                    prediction=run.classes.index(row["prediction"]),
                    probabilities=tuple(float(row[f"prob_{c}"]) for c in run.classes),
                    weights=tuple(float(row[f"weight_{s}"]) for s in run.expert_sites),
                    ood_score=float(row["ood_score"]),
                    ood_flag=bool(row["ood_flag"]),
                    tracking_uid=str(generate_uid(entropy_srcs=[run.run_id, m.item_id])),
                    label=f"sitefusion item {m.item_id}",
                )
            )
        version = package_version("sitefusion") or "unknown"
        sr = build_series_sr(
            findings,
            classes=run.classes,
            sites=run.expert_sites,
            run_id=run.run_id,
            method=self.method,
            version=version,
            series_uid=sr_series,
            sop_uid=sr_instance,
            created=_document_time(run.completed_at, template),
            patient=self.sr_patient,
        )
        write_series_sr(path, sr)
