"""Training workflow: the whole chain from a config to a finished run directory.

Stages (each skipped when its artifacts are already recorded, so a rerun resumes):

1. ``prepare``: resolved config, data schema, group splits (leakage-checked), images in memory.
2. ``normalizers``: one site normalizer per site fitted on that site's training split only, plus
   a pooled one for the pooled baseline and the ``pooled`` unseen-site policy.
3. ``init``: one set of initial expert weights shared by every expert (fair weight averaging,
   and the random-feature control).
4. ``expert:<site>``: each expert trains on its own site's training split only, normalized by its
   own site's normalizer, checkpointing every epoch.
5. ``pooled``: the pooled baseline (:class:`~sitefusion.methods.PooledMethod`).
6. ``features``: every image through every trained expert, and through the untrained (initial)
   experts for the random-feature control; cached ``[N, E, D]`` features and ``[N, E, K]`` logits.
7. every other configured method (:func:`~sitefusion.methods.configured_methods`), in order: the
   fusion heads, the random-feature control, stacking, weight averaging.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console

from sitefusion.config import Config, config_from_dict, config_to_dict, parse_yaml
from sitefusion.data import (
    Manifest,
    check_leakage,
    generate_from_config,
    load_image_stack,
    load_manifest,
    load_splits,
    make_splits,
    splits_csv,
)
from sitefusion.errors import ArtifactError, ConfigError, ManifestError
from sitefusion.experts import build_expert
from sitefusion.methods import configured_methods
from sitefusion.methods.fedavg import FedAvgMethod
from sitefusion.normalization import NormalizerBank
from sitefusion.rundir import RunDir
from sitefusion.rundir.environment import environment_info, record_environment
from sitefusion.training.context import RunData, TrainContext, head_rows
from sitefusion.training.progress import make_progress
from sitefusion.training.stages import (
    cache_features,
    fit_normalizers,
    initial_state,
    load_experts,
    set_threads,
    train_expert,
)

__all__ = [
    "only_site",
    "prepare_normalized",
    "prepare_run",
    "resolve_data",
    "train_run",
]


def _log(console: Console | None, message: str) -> None:
    if console is not None:
        console.print(message)


def only_site(manifest: Manifest, site: str) -> Manifest:
    """The rows of ``site`` only, as a manifest with that one site.

    Raises:
        ManifestError: the manifest has no row of ``site`` (the message lists its sites).
    """
    if site not in manifest.sites:
        raise ManifestError(
            f"{manifest.source}: no rows of site {site!r}; the manifest's sites are "
            f"{', '.join(repr(s) for s in manifest.sites)}"
        )
    records = tuple(r for r in manifest.records if r.site == site)
    return Manifest(manifest.source, records, manifest.classes, (site,))


def resolve_data(cfg: Config, out: Path, *, generate: bool = True) -> tuple[Path, Path]:
    """The manifest path and image root of ``cfg``.

    A synthetic set lives in the run directory (``out/data``); with ``generate`` it is generated
    there if missing. Evaluation passes ``generate=False``: it never writes into a run.
    """
    if cfg.data.source == "synthetic":
        s = cfg.data.synthetic
        target = out / "data"
        manifest = target / "manifest.csv"
        if not manifest.exists() and not generate:
            raise ArtifactError(
                f"{manifest}: the run's generated data set is missing; evaluate on a manifest "
                "with --manifest, or retrain the run"
            )
        if not manifest.exists():
            generate_from_config(target, s)
        return manifest, target
    root = cfg.data_root()
    if not root.is_dir():
        raise ConfigError(
            f"{cfg.source_path}: field 'data.root' is {str(root)!r}, which is not a directory "
            "(relative roots are taken from the current directory; override with --set data.root=...)"
        )
    return root / cfg.data.manifest, root


def prepare_run(
    cfg: Config,
    out: Path,
    console: Console | None = None,
    *,
    site: str | None = None,
    fixed_splits: Mapping[str, str] | None = None,
    load_images: bool = True,
) -> tuple[RunDir, RunData]:
    """Stage 1: write config, schema and splits (or check them on resume) and load the images.

    ``site``: keep only that site's rows of the manifest, before any image is read (a federated
    site's own run directory); a manifest without rows of ``site`` is an error naming both.
    ``fixed_splits`` (group -> split): groups whose split was decided elsewhere (a federated
    site's groups at home at another site), used when the splits are first made.
    ``load_images=False``: everything but the pixels (``data.images`` is empty), for a step that
    works from cached arrays.
    """
    run = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if run.has("config.yaml"):
        # Compared as configs, not text: a field added to sitefusion later (with its default)
        # does not make an existing run directory unusable.
        stored = config_from_dict(
            parse_yaml(run.read_text("config.yaml"), str(out / "config.yaml")), str(out)
        )
        if config_to_dict(stored) != config_to_dict(cfg):
            raise ConfigError(
                f"{out / 'config.yaml'}: this run directory was trained with a different "
                "configuration; use a new --out or the same config and overrides"
            )
    else:
        run.write_text("config.yaml", resolved)
        run.set_info(run_id=uuid.uuid4().hex[:12], status="training")

    manifest_path, image_root = resolve_data(cfg, out)
    manifest = load_manifest(
        manifest_path,
        cfg.data,
        image_root=image_root,
        allow_outside_root=cfg.data.allow_outside_root,
    )
    if manifest.classes_from_labels and console is not None and not run.has("schema.json"):
        # Without data.classes every label is a class: a misspelt one becomes a class of its own.
        console.print(
            f"[yellow]warning:[/] data.classes is not set in {cfg.source_path}: the classes are "
            f"the {len(manifest.classes)} labels found in {manifest_path}: "
            f"{', '.join(manifest.classes)}; set data.classes to have any other label refused",
            highlight=False,
            soft_wrap=True,
        )
    if site is not None:
        manifest = only_site(manifest, site)
    if run.has("splits.csv"):
        splits = load_splits(run.verify("splits.csv"))
        check_leakage(manifest, splits)
    else:
        splits = make_splits(manifest, cfg.split, fixed=fixed_splits)
        run.write_text("splits.csv", splits_csv(manifest, splits))
    if not run.has("schema.json"):
        run.write_json(
            "schema.json",
            {
                "columns": {
                    "image": cfg.data.image,
                    "label": cfg.data.label,
                    "site": cfg.data.site,
                    "group": cfg.data.group,
                    "id": cfg.data.id,
                },
                "classes": list(manifest.classes),
                "sites": list(manifest.sites),
                "experts": list(manifest.sites),
                "spatial_size": list(cfg.data.spatial_size),
                "channels": cfg.data.channels,
                "split_counts": {
                    site: {
                        name: sum(
                            1 for r in manifest.records if r.site == site and splits[r.id] == name
                        )
                        for name in ("train", "val", "fusion", "test")
                    }
                    for site in manifest.sites
                },
            },
        )
    t0 = time.perf_counter()
    if load_images:
        with make_progress(console) as progress:
            task = progress.add_task("reading images", total=len(manifest), info="")
            images = load_image_stack(
                [r.path for r in manifest.records],
                cfg.data.spatial_size,
                cfg.data.channels,
                on_progress=lambda k: progress.advance(task, k),
            )
        _log(console, f"read {len(manifest)} images in {time.perf_counter() - t0:.1f} s")
    else:
        images = np.zeros((0, cfg.data.channels, *cfg.data.spatial_size), dtype=np.float32)
    data = RunData(
        manifest=manifest,
        splits=splits,
        images=images,
        labels=np.array([manifest.label_index(r) for r in manifest.records], dtype=np.int64),
        sites=np.array([r.site for r in manifest.records]),
        ids=[r.id for r in manifest.records],
    )
    return run, data


def train_run(
    cfg: Config,
    out: str | Path,
    *,
    console: Console | None = None,
    sites: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the whole chain into ``out``; returns stage timings and the run id.

    ``sites`` limits the expert stage to those sites and stops after it (the per-site pipeline a
    hospital runs where its data lives).
    """
    set_threads(cfg)
    out = Path(out)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    run, data = prepare_run(cfg, out, console)
    timings["prepare"] = time.perf_counter() - t
    if run.read_manifest().get("status") == "complete" and sites is None:
        _log(console, f"{out}: run already complete; nothing to do")
        return {"run_id": run.read_manifest().get("run_id"), "timings": {}, "complete": True}
    manifest = run.read_manifest()
    if record_environment(manifest, environment_info()):
        _log(
            console,
            f"{out}: resumed with other software or hardware than it was last trained with "
            "(manifest.json 'environments'); weights may differ from an uninterrupted run's",
        )
    run.set_info(environments=manifest["environments"])

    t = time.perf_counter()
    bank = fit_normalizers(cfg, run, data)
    timings["normalizers"] = time.perf_counter() - t
    num_classes = len(data.manifest.classes)
    initial_state(cfg, run, num_classes)

    methods = configured_methods(cfg, data.manifest.sites)
    ctx = TrainContext(cfg, run, data, bank, console=console)
    start = None
    if cfg.expert.start == "fedavg":
        # The experts are fine-tuned from the FedAvg model, so it trains before them.
        fedavg = next(m for m in methods if m.name == "fedavg")
        if (
            sites is not None
            and set(sites) != set(data.manifest.sites)
            and not fedavg.is_trained(run)
        ):
            raise ConfigError(
                f"{cfg.source_path}: expert.start is 'fedavg', so the site experts start from a "
                "FedAvg model trained over every site; run the whole chain ('sitefusion train'), "
                "or 'sitefusion federate' where the sites cannot share images"
            )
        if not fedavg.is_trained(run):
            t = time.perf_counter()
            fedavg.fit(ctx)
            timings[fedavg.name] = time.perf_counter() - t
        start = run.read_tensors(FedAvgMethod.ARTIFACT)

    for site in sites if sites is not None else data.manifest.sites:
        t = time.perf_counter()
        if train_expert(cfg, run, data, bank, site, console, start=start):
            timings[f"expert:{site}"] = time.perf_counter() - t
    if sites is not None:
        return {"run_id": run.read_manifest().get("run_id"), "timings": timings, "complete": False}

    # Methods that read images rather than the feature cache (pooled training) train first.
    for method in methods:
        if not method.reads_features and not method.is_trained(run):
            t = time.perf_counter()
            method.fit(ctx)
            timings[method.name] = time.perf_counter() - t

    t = time.perf_counter()
    experts = load_experts(cfg, run, data.manifest.sites, num_classes)
    feats = cache_features(cfg, run, data, bank, "features/trained.safetensors", experts, console)
    random_feats = None
    if cfg.baselines.random_features:
        # Every expert starts from the same initial weights: one network, run once per image.
        untrained = build_expert(cfg, num_classes)
        untrained.load_state_dict(run.read_tensors("experts/init.safetensors"))
        random_feats = cache_features(
            cfg,
            run,
            data,
            bank,
            "features/random.safetensors",
            [untrained.eval()] * len(data.manifest.sites),
            console,
        )
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    ctx = dataclasses.replace(
        ctx,
        features=feats,
        random_features=random_feats,
        rows=head_rows(cfg, data, feats),
    )
    for method in methods:
        method.fit(ctx)
    timings["fusion_and_baselines"] = time.perf_counter() - t
    previous = run.read_manifest().get("timings", {})
    # When the run was finished: the time stamp of everything scored with it (an SR's dates),
    # so that a rescored or resumed batch writes the same bytes.
    completed = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    run.set_info(status="complete", completed_at=completed, timings={**previous, **timings})
    return {"run_id": run.read_manifest().get("run_id"), "timings": timings, "complete": True}


def prepare_normalized(
    cfg: Config, out: str | Path, console: Console | None = None
) -> tuple[RunData, NormalizerBank]:
    """Stages 1 and 2 only (``sitefusion prepare``): splits and the fitted site normalizers."""
    run, data = prepare_run(cfg, Path(out), console)
    return data, fit_normalizers(cfg, run, data)
