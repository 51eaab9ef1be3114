"""Evaluation workflow: every stored method of a run on one test set, per site.

``evaluate_run`` loads a finished run, reads the test images (the run's internal test split, or
any manifest of the same layout), predicts every method from one shared pass through the experts,
adds temperature scaling of the fusion (fitted on the fusion split) and, on request,
leave-one-site-out, then computes the metrics and writes the report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from sitefusion.atomic import ensure_writable_folder
from sitefusion.data import (
    Manifest,
    load_image_stack,
    load_manifest,
    load_split_table,
    load_splits,
)
from sitefusion.errors import ArtifactError, UnknownChoiceError
from sitefusion.evaluation.calibration import apply_temperature
from sitefusion.evaluation.harness import evaluate_loso, evaluate_predictions
from sitefusion.evaluation.metrics import balanced_accuracy, expected_calibration_error
from sitefusion.evaluation.predictions import PredictionSet
from sitefusion.methods import (
    FusionMethod,
    LoadedRun,
    OutputAverage,
    RunPredictions,
    fit_head,
    local_name,
    softmax_rows,
)
from sitefusion.reporting import write_report
from sitefusion.rundir import RunDir
from sitefusion.training.context import RowInfo, select_head_rows
from sitefusion.training.features import ExpertFeatures, load_feature_cache
from sitefusion.training.progress import make_progress
from sitefusion.workflows.train import resolve_data


def _as_probabilities(probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float64 rows renormalised to sum to 1 (float32 softmax rows are off by ~1e-7, which
    scikit-learn's probability checks warn about)."""
    out = {}
    for name, p in probs.items():
        q = np.asarray(p, dtype=np.float64)
        out[name] = q / q.sum(axis=1, keepdims=True)
    return out


__all__ = [
    "EVALUATION_SPLITS",
    "evaluate_run",
    "head_training_rows",
    "internal_test_manifest",
    "loso_predictions",
    "predict_manifest",
    "quick_site_table",
    "training_overlap",
]


def _federated(loaded: LoadedRun) -> bool:
    return loaded.run.read_manifest().get("mode") == "federated"


#: Internal splits a run can be evaluated on: ``test`` (the one to report) and ``val`` (to choose
#: a design on: no network trained on it, though experts and the pooled model early-stopped on
#: it).
EVALUATION_SPLITS = ("test", "val")


def internal_test_manifest(loaded: LoadedRun, split: str = "test") -> Manifest:
    """The run's internal test split (or ``split``, one of :data:`EVALUATION_SPLITS`), as a
    manifest.

    Raises:
        ArtifactError: a federated run (its splits stay at the sites).
        UnknownChoiceError: ``split`` is not an evaluation split.
    """
    if split not in EVALUATION_SPLITS:
        raise UnknownChoiceError("split", split, EVALUATION_SPLITS)
    if _federated(loaded):
        raise ArtifactError(
            f"{loaded.root}: a federated run's test splits stay at the sites (its report is in "
            f"{loaded.root / 'report'}); evaluate it on a test set of your own with --manifest"
        )
    manifest_path, image_root = resolve_data(loaded.cfg, loaded.root, generate=False)
    manifest = load_manifest(
        manifest_path,
        loaded.cfg.data,
        image_root=image_root,
        classes=loaded.classes,
        allow_outside_root=loaded.cfg.data.allow_outside_root,
    )
    splits = load_splits(loaded.run.verify("splits.csv"))
    return manifest.subset({i for i, s in splits.items() if s == split})


def predict_manifest(
    loaded: LoadedRun, manifest: Manifest, console: Console | None = None
) -> tuple[PredictionSet, RunPredictions]:
    """Read the manifest's images and predict every method of the run on them."""
    paths = [r.path for r in manifest.records]
    with make_progress(console) as progress:
        task = progress.add_task("reading test images", total=len(paths), info="")
        images = load_image_stack(
            paths,
            loaded.spatial_size,
            loaded.channels,
            on_progress=lambda k: progress.advance(task, k),
        )
        task2 = progress.add_task("predicting", total=len(paths), info="")
        preds = loaded.predict(
            images,
            [r.site for r in manifest.records],
            on_batch=lambda k: progress.advance(task2, k),
        )
    known = [s for s in loaded.expert_sites if s in manifest.sites]
    sites = known + [s for s in manifest.sites if s not in known]
    pset = PredictionSet(
        classes=loaded.classes,
        sites=tuple(sites),
        experts=loaded.expert_sites,
        ids=np.array([r.id for r in manifest.records]),
        labels=np.array([manifest.label_index(r) for r in manifest.records]),
        site=np.array([r.site for r in manifest.records]),
        group=np.array([r.group for r in manifest.records]),
        probs=_as_probabilities(preds.probs),
        attention=preds.attention,
    )
    return pset, preds


def training_overlap(loaded: LoadedRun, manifest: Manifest) -> dict[str, Any]:
    """How many of ``manifest``'s images the run learned from, directly or through their group.

    An image counts when its id, or its site and group (patient, lesion), is in the run's
    train, validation or fusion split: figures on such images are optimistic. Returns
    ``{"images": n, "ids": n_same_id, "groups": n_shared_groups}``; for a federated run, whose
    splits stay at the sites, zeros and a ``note`` saying it could not be checked.
    """
    if _federated(loaded):
        return {
            "images": 0,
            "ids": 0,
            "groups": 0,
            "note": "federated run: the training images stay at the sites; overlap not checked",
        }
    table = load_split_table(loaded.run.verify("splits.csv"))
    trained = [(rid, row) for rid, row in table.items() if row["split"] != "test"]
    seen = {rid for rid, _ in trained}
    seen_groups = {(row["site"], row["group"]) for _, row in trained}
    same_id = [r for r in manifest.records if r.id in seen]
    shared = [r for r in manifest.records if (r.site, r.group) in seen_groups]
    hit = {r.id for r in same_id} | {r.id for r in shared}
    return {
        "images": len(hit),
        "ids": len(same_id),
        "groups": len({(r.site, r.group) for r in shared}),
    }


def head_training_rows(
    loaded: LoadedRun,
) -> tuple[ExpertFeatures, np.ndarray, np.ndarray, np.ndarray]:
    """The cached rows the run's fusion learned from: features, labels, sites and presence
    ``[M, E]`` (the same selection as at training time)."""
    feats = load_feature_cache(loaded.run, "features/trained.safetensors")
    info = {
        rid: RowInfo(row["site"], loaded.classes.index(row["label"]), row["group"], row["split"])
        for rid, row in load_split_table(loaded.run.verify("splits.csv")).items()
    }
    rows = select_head_rows(feats.ids, info, loaded.expert_sites, loaded.cfg.fusion.cross_fit)
    sub = feats.subset(rows.positions)
    sites = np.array([info[rid].site for rid in sub.ids])
    return sub, rows.labels, sites, rows.presence


def _calibration(loaded: LoadedRun, pset: PredictionSet, bins: int) -> dict[str, Any]:
    """Temperature scaling of ``fusion`` with the run's stored temperature (the one scoring
    applies; where it was fitted is in ``fitted_on``); ECE per site before and after."""
    if "fusion" not in loaded.methods or "fusion" not in pset.probs:
        return {}
    meta = loaded.run.read_json("fusion/fusion.json").get("calibration")
    if not meta or _federated(loaded):
        return {}
    temperature = loaded.temperature("fusion")
    log_p = np.log(np.clip(pset.probs["fusion"], 1e-12, 1.0))
    calibrated = apply_temperature(log_p, temperature)
    per_site: dict[str, Any] = {}
    for site in [*pset.sites, "overall"]:
        m = np.ones(len(pset.labels), bool) if site == "overall" else pset.site == site
        if not m.any():
            continue
        per_site[site] = {
            "ece_before": expected_calibration_error(pset.labels[m], pset.probs["fusion"][m], bins),
            "ece_after": expected_calibration_error(pset.labels[m], calibrated[m], bins),
        }
    out = {
        "method": "fusion",
        "temperature": temperature,
        "per_site": per_site,
        "fitted_on": str(meta.get("fitted_on", "fusion split")),
    }
    if meta.get("note"):  # why no temperature was applied (training.run.temperature_record)
        out["note"] = str(meta["note"])
    return out


def loso_predictions(
    loaded: LoadedRun, manifest: Manifest, console: Console | None = None
) -> dict[str, PredictionSet]:
    """Leave-one-site-out predictions on each expert site's test images.

    For each site: the fusion retrained on cached features without that site's expert and without
    that site's rows; its test images normalized by the unseen-site policy over the *other* sites'
    normalizers; compared with each remaining local expert and their output average.
    """
    feats, y, fsites, base_presence = head_training_rows(loaded)
    paths = [r.path for r in manifest.records]
    images = load_image_stack(paths, loaded.spatial_size, loaded.channels)
    site_of = np.array([r.site for r in manifest.records])
    blocks: dict[str, PredictionSet] = {}
    mode = loaded.cfg.fusion.modes[0]
    for e, site in enumerate(loaded.expert_sites):
        test_rows = np.flatnonzero(site_of == site)
        if not len(test_rows):
            continue
        keep = fsites != site
        presence = base_presence[keep].copy()
        presence[:, e] = False
        usable = presence.any(1)
        head = fit_head(
            loaded.cfg,
            mode,
            feats.features[keep][usable],
            feats.logits[keep][usable],
            y[keep][usable],
            presence[usable],
            len(loaded.classes),
            loaded.cfg.seed,
        )
        bank = loaded.bank.without(site)
        preds = loaded.predict(images[test_rows], [None] * len(test_rows), bank=bank, methods=())
        if preds.features is None:  # pragma: no cover - predict always sets it
            raise RuntimeError("prediction returned no expert features")
        mask = np.ones((len(test_rows), len(loaded.expert_sites)), bool)
        mask[:, e] = False
        fused = FusionMethod.from_head("fusion", head).predict(preds.features, {}, mask)
        averaged = OutputAverage().predict(preds.features, {}, mask)
        probs = {"fusion": fused.probs, "output_average": averaged.probs}
        for j, other in enumerate(loaded.expert_sites):
            if other != site:
                probs[local_name(other)] = softmax_rows(preds.features.logits[:, j])
        blocks[site] = PredictionSet(
            classes=loaded.classes,
            sites=(site,),
            experts=loaded.expert_sites,
            ids=np.array([manifest.records[i].id for i in test_rows]),
            labels=np.array([manifest.label_index(manifest.records[i]) for i in test_rows]),
            site=site_of[test_rows],
            group=np.array([manifest.records[i].group for i in test_rows]),
            probs=_as_probabilities(probs),
            attention={} if fused.weights is None else {"fusion": fused.weights},
        )
        if console is not None:
            console.print(f"leave-one-site-out: {site} held out ({len(test_rows)} test images)")
    return blocks


def evaluate_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    image_root: str | Path | None = None,
    loso: bool = False,
    n_boot: int | None = None,
    allow_outside_root: bool = False,
    split: str = "test",
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate every method of a run and write ``metrics.json``, ``report.md``, ``report.html``.

    Args:
        run_dir: a finished run directory (hashes are checked on load).
        out: report directory.
        manifest, image_root: evaluate on this manifest (the run's column mapping and classes)
            instead of the run's internal test split.
        loso: also run leave-one-site-out (only for sites with test images).
        allow_outside_root: accept image paths of ``manifest`` outside ``image_root``.
        n_boot: bootstrap resamples (default: the run's ``evaluation.bootstrap``).
        split: without ``manifest``, the internal split to evaluate: ``test``, or ``val`` to
            compare designs without looking at the test split.
    """
    t0 = time.perf_counter()
    RunDir(Path(run_dir)).refuse_output_inside(out, "report folder", report=True)
    ensure_writable_folder(out, "report folder")  # before anything is predicted
    loaded = LoadedRun(run_dir)
    ecfg = loaded.cfg.evaluation
    n_boot = ecfg.bootstrap if n_boot is None else n_boot
    if loso and _federated(loaded):
        raise ArtifactError(
            f"{loaded.root}: leave-one-site-out retrains the fusion on its training features, "
            "which stay at the sites in a federated run"
        )
    if loso and loaded.cfg.expert.start == "fedavg":
        raise ArtifactError(
            f"{loaded.root}: leave-one-site-out needs experts that never saw the held-out site; "
            "this run's experts were all fine-tuned from the FedAvg model, which learned from "
            "every site's training images (expert.start: fedavg), so no site is unseen"
        )
    if manifest is None:
        test = internal_test_manifest(loaded, split)
    else:
        mpath = Path(manifest)
        test = load_manifest(
            mpath,
            loaded.cfg.data,
            image_root=image_root if image_root is not None else mpath.parent,
            classes=loaded.classes,
            allow_outside_root=allow_outside_root,
        )
    overlap = training_overlap(loaded, test)
    if overlap["images"] and console is not None:
        console.print(
            f"[bold red]warning:[/] {overlap['images']} of the {len(test.records)} images "
            f"({overlap['ids']} by image id, the rest through {overlap['groups']} shared groups) "
            "were used to train this run; their figures are optimistic"
        )
    pset, _ = predict_manifest(loaded, test, console)
    metrics = evaluate_predictions(pset, n_boot=n_boot, seed=ecfg.seed, ece_bins=ecfg.ece_bins)
    metrics["calibration"] = _calibration(loaded, pset, ecfg.ece_bins)
    if loso:
        blocks = loso_predictions(loaded, test, console)
        metrics["leave_one_site_out"] = evaluate_loso(
            blocks, n_boot=n_boot, seed=ecfg.seed, ece_bins=ecfg.ece_bins
        )
    metrics["run"] = {
        "run_id": loaded.run_id,
        "run_dir": str(loaded.root),
        "test_set": f"internal {split} split" if manifest is None else str(manifest),
        "n_images": len(pset.labels),
        "overlap_with_training": overlap,
        "bootstrap": n_boot,
        "seconds": time.perf_counter() - t0,
    }
    write_report(metrics, pset, Path(out))
    return metrics


def quick_site_table(
    run_dir: str | Path, methods: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Balanced accuracy of every method per site on the internal test split (no bootstrap)."""
    loaded = LoadedRun(run_dir)
    pset, _ = predict_manifest(loaded, internal_test_manifest(loaded))
    out: dict[str, dict[str, float]] = {}
    for method in methods or list(pset.probs):
        out[method] = {
            s: balanced_accuracy(pset.labels[pset.site == s], pset.probs[method][pset.site == s])
            for s in pset.sites
        }
        out[method]["mean"] = float(np.mean([out[method][s] for s in pset.sites]))
    return out
