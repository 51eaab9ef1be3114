"""The network stages of a run: normalizers, shared initial weights, the site experts (and any
network of the experts' architecture, such as the pooled model), and the feature cache.

Each stage is skipped when its artifacts are already recorded in the run directory, so a rerun
resumes where an interrupted one stopped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from sitefusion.config import Config
from sitefusion.errors import ManifestError, UnknownChoiceError
from sitefusion.experts import SiteExpert, build_expert, initial_weights
from sitefusion.normalization import NormalizerBank
from sitefusion.rundir import RunDir
from sitefusion.training.context import RunData, normalize_rows
from sitefusion.training.features import (
    ExpertFeatures,
    extract_features,
    load_feature_cache,
    save_feature_cache,
)
from sitefusion.training.loop import EpochReport, epoch_steps, fit_classifier
from sitefusion.training.progress import make_progress

__all__ = [
    "cache_features",
    "fit_normalizers",
    "initial_state",
    "load_experts",
    "set_threads",
    "train_expert",
    "train_network",
]


def _log(console: Console | None, message: str) -> None:
    if console is not None:
        console.print(message)


def set_threads(cfg: Config) -> None:
    """Apply ``training.threads`` (torch's intra-op threads) if the config sets it."""
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)


def _adopt_dir(run: RunDir, rel_dir: str) -> None:
    for path in sorted((run.root / rel_dir).glob("*.json")):
        run.adopt(f"{rel_dir}/{path.name}")


def fit_normalizers(cfg: Config, run: RunDir, data: RunData) -> NormalizerBank:
    """Stage 2: fit (or load) the normalizer bank from each site's training split."""
    if run.has("normalizers/bank.json"):
        for rel in run.read_manifest()["artifacts"]:
            if rel.startswith("normalizers/"):
                run.verify(rel)
        return NormalizerBank.load(run.root / "normalizers")
    _require_training_images(data)
    bank = NormalizerBank(
        cfg.normalization.kind,
        dict(cfg.normalization.params),
        unseen_policy=cfg.normalization.unseen_policy,
    )
    bank.fit(
        {
            site: [data.images[i] for i in data.rows("train", site=site)]
            for site in data.manifest.sites
        }
    )
    bank.save(run.root / "normalizers")
    _adopt_dir(run, "normalizers")
    return bank


def _require_training_images(data: RunData) -> None:
    """Refuse a site whose training split is empty, naming the manifest, the site and its rows.

    Its normalizer and expert cannot be fitted. Such a site is usually a mistake in the manifest:
    a site of one or two patients, or a cell with an unquoted comma that shifts the row so that a
    label or group lands in the site column and makes a site of its own.
    """
    for site in data.manifest.sites:
        if len(data.rows("train", site=site)):
            continue
        rows = [r.row for r in data.manifest.records if r.site == site]
        shown = ("row " if len(rows) == 1 else "rows ") + ", ".join(str(r) for r in rows[:8])
        shown += " ..." if len(rows) > 8 else ""
        counts = ", ".join(
            f"{name} {len(data.rows(name, site=site))}" for name in ("val", "fusion", "test")
        )
        raise ManifestError(
            f"{data.manifest.source}: site {site!r} has no image in the training split "
            f"({len(rows)} image(s) on {shown}; {counts}); a site needs enough patients or "
            "lesions for every split. Check those rows: a cell with an unquoted comma shifts "
            "the columns and makes a new site"
        )


def initial_state(cfg: Config, run: RunDir, num_classes: int) -> dict[str, torch.Tensor]:
    """Stage 3: the shared initial expert weights."""
    if run.has("experts/init.safetensors"):
        return run.read_tensors("experts/init.safetensors")
    torch.manual_seed(cfg.seed)
    state, source = initial_weights(build_expert(cfg, num_classes), cfg.expert.pretrained)
    run.set_info(pretrained=source)  # before the weights: a resume skips this stage once they exist
    run.write_tensors("experts/init.safetensors", state)
    return state


def train_network(
    cfg: Config,
    run: RunDir,
    data: RunData,
    stem: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    console: Console | None,
    *,
    start: dict[str, torch.Tensor] | None = None,
    start_name: str = "initial",
) -> None:
    """Train one network of the experts' architecture and write ``<stem>.safetensors`` (the
    whole network) and ``<stem>.json``.

    It starts from ``start`` (whole-network weights, such as the FedAvg model; ``start_name``
    says which, for the JSON record) or, by default, the shared initial weights. ``x_train`` / ``x_val`` are normalized images.
    """
    num_classes = len(data.manifest.classes)
    model = build_expert(cfg, num_classes)
    model.load_state_dict(start if start is not None else initial_state(cfg, run, num_classes))
    set_threads(cfg)
    t0 = time.perf_counter()
    name = Path(stem).name
    per_epoch = epoch_steps(len(y_train), cfg.training) * cfg.training.batch_size
    with make_progress(console) as progress:
        task = progress.add_task(name, total=cfg.training.epochs * per_epoch, info="")

        def on_epoch(r: EpochReport) -> None:
            # The bar counts images; an epoch's last batch may be short, so snap to the epoch.
            progress.update(
                task,
                completed=(r.epoch + 1) * per_epoch,
                info=f"epoch {r.epoch + 1}/{r.epochs} loss {r.train_loss:.3f} "
                f"val bal.acc {r.val_balanced_accuracy:.3f} {r.images_per_second:.0f} img/s",
            )
            if console is not None and not console.is_terminal:
                console.print(f"  {name} {progress.tasks[task].fields['info']}")

        result = fit_classifier(
            model,
            x_train,
            y_train,
            x_val,
            y_val,
            cfg=cfg.training,
            num_classes=num_classes,
            seed=seed,
            run=run,
            checkpoint_stem=f"checkpoints/{name}",
            on_epoch=on_epoch,
            on_batch=lambda k: progress.advance(task, k),
        )
        if result.resumed_from is not None:
            _log(console, f"  {name}: resumed after epoch {result.resumed_from + 1}")
        progress.update(task, completed=cfg.training.epochs * per_epoch)
    # fit_classifier left its best weights in ``model``.
    run.write_tensors(f"{stem}.safetensors", model.state_dict())
    run.write_json(
        f"{stem}.json",
        {
            "expert": model.describe(),
            "start": start_name if start is not None else "initial",
            "n_train": len(y_train),
            "n_val": len(y_val),
            "best_epoch": result.best_epoch,
            "history": result.history,
            "resumed_from_epoch": result.resumed_from,
            "seconds": time.perf_counter() - t0,
        },
    )


def train_expert(
    cfg: Config,
    run: RunDir,
    data: RunData,
    bank: NormalizerBank,
    site: str,
    console: Console | None = None,
    *,
    sites: Sequence[str] | None = None,
    start: dict[str, torch.Tensor] | None = None,
) -> bool:
    """Stage 4 for one site; returns ``False`` if it was already trained.

    The expert's seed follows the site's place among the run's ``sites`` (default: the
    manifest's): a federated site, whose manifest holds only its own rows, passes the
    federation's site list, so that its expert is the one central training makes. ``start``:
    the whole-network weights it is fine-tuned from (``expert.start: fedavg``: the FedAvg model);
    by default the shared initial weights.
    """
    if site not in data.manifest.sites:
        raise UnknownChoiceError("site", site, data.manifest.sites)
    order = list(sites) if sites is not None else list(data.manifest.sites)
    if site not in order:
        raise UnknownChoiceError("site", site, order)
    stem = f"experts/{site}"
    if run.has(f"{stem}.safetensors"):
        return False
    tr, va = data.rows("train", site=site), data.rows("val", site=site)
    _log(console, f"[bold]expert {site}[/]: {len(tr)} training, {len(va)} validation images")
    train_network(
        cfg,
        run,
        data,
        stem,
        normalize_rows(bank, data, tr),
        data.labels[tr],
        normalize_rows(bank, data, va),
        data.labels[va],
        cfg.seed + 1 + order.index(site),
        console,
        start=start,
        start_name=cfg.expert.start,
    )
    return True


def load_experts(
    cfg: Config, run: RunDir, sites: Sequence[str], num_classes: int
) -> list[SiteExpert]:
    """The trained experts in site order (hash-checked)."""
    experts = []
    for site in sites:
        e = build_expert(cfg, num_classes)
        e.load_state_dict(run.read_tensors(f"experts/{site}.safetensors"))
        experts.append(e.eval())
    return experts


def cache_features(
    cfg: Config,
    run: RunDir,
    data: RunData,
    bank: NormalizerBank,
    rel: str,
    experts: list[SiteExpert],
    console: Console | None = None,
) -> ExpertFeatures:
    """Stage 6: every image's features ``[N, E, D]`` and logits ``[N, E, K]`` under ``experts``,
    read from the cache ``rel`` if the run has it, else computed once and written there."""
    rows = data.rows("train", "val", "fusion", "test")
    if run.has(rel):
        return load_feature_cache(run, rel)
    x = normalize_rows(bank, data, rows)
    with make_progress(console) as progress:
        task = progress.add_task(f"features {Path(rel).stem}", total=len(rows), info="")
        feats = extract_features(
            experts,
            x,
            [data.ids[i] for i in rows],
            device=cfg.training.device,
            on_batch=lambda k: progress.advance(task, k),
        )
    save_feature_cache(run, rel, feats)
    return feats
