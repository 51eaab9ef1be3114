"""The whole training chain, stage by stage, writing one run directory.

Stages (each skipped when its artifacts are already recorded, so a rerun resumes):

1. ``prepare``: resolved config, data schema, group splits (leakage-checked), images in memory.
2. ``normalizers``: one site normalizer per site fitted on that site's training split only, plus
   a pooled one for the pooled baseline and the ``pooled`` unseen-site policy.
3. ``init``: one set of initial expert weights shared by every expert (fair weight averaging,
   and the random-feature control).
4. ``expert:<site>``: each expert trains on its own site's training split only, normalized by its
   own site's normalizer, checkpointing every epoch.
5. ``pooled``: the same network on the union of all sites' training and fusion splits.
6. ``features``: every image through every trained expert, and through the untrained (initial)
   experts for the random-feature control; cached ``[N, E, D]`` features and ``[N, E, K]`` logits.
7. ``fusion``: every fusion mode on cached features of the fusion split (plus, with
   ``fusion.cross_fit``, the expert-training images with their own site's expert masked out, so
   no feature an expert computed on its own training images reaches the fusion); its temperature
   from out-of-fold logits; stacking; weight averaging; the random-feature control.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console

from sitefusion.config import Config, config_from_dict, config_to_dict
from sitefusion.data import (
    Manifest,
    check_leakage,
    generate_synthetic_dataset,
    load_image_stack,
    load_manifest,
    load_splits,
    make_splits,
    splits_csv,
)
from sitefusion.errors import ArtifactError, ConfigError, UnknownChoiceError
from sitefusion.experts import SiteExpert, average_state_dicts, initial_weights
from sitefusion.fusion import apply_site_prior, site_prior_offsets
from sitefusion.normalization import NormalizerBank
from sitefusion.rundir import RunDir
from sitefusion.rundir.environment import environment_info, record_environment
from sitefusion.training.features import (
    ExpertFeatures,
    extract_features,
    load_feature_cache,
    save_feature_cache,
)
from sitefusion.training.finetune import (
    FusedSystem,
    compare_soup_to_members,
    expert_states,
    finetune_soup,
)
from sitefusion.training.fusion_head import FusionClassifier, fit_fusion
from sitefusion.training.loop import EpochReport, epoch_steps, fit_classifier
from sitefusion.training.progress import make_progress
from sitefusion.training.stacking import fit_stacking

__all__ = [
    "FUSION_METHOD_NAMES",
    "HeadRows",
    "RowInfo",
    "RunData",
    "build_expert",
    "cache_features",
    "head_rows",
    "head_site_prior",
    "prepare_run",
    "resolve_data",
    "select_head_rows",
    "temperature_record",
    "train_expert",
    "train_run",
]

FUSION_METHOD_NAMES = {
    "average_attention": "fusion",
    "concat": "fusion_concat",
    "attention": "fusion_attention",
}


@dataclass
class RunData:
    """Everything about the data a run needs in memory."""

    manifest: Manifest
    splits: dict[str, str]
    images: np.ndarray  # [N, C, *S] conformed, not normalized
    labels: np.ndarray  # [N] int
    sites: np.ndarray  # [N] str
    ids: list[str]

    def rows(self, *split_names: str, site: str | None = None) -> np.ndarray:
        """Row indices of the given splits (and site), in manifest order."""
        wanted = set(split_names)
        return np.array(
            [
                i
                for i, rid in enumerate(self.ids)
                if self.splits[rid] in wanted and (site is None or self.sites[i] == site)
            ],
            dtype=np.int64,
        )


def _log(console: Console | None, message: str) -> None:
    if console is not None:
        console.print(message)


def _set_threads(cfg: Config) -> None:
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)


def resolve_data(cfg: Config, out: Path) -> tuple[Path, Path]:
    """The manifest path and image root of ``cfg`` (generating the synthetic set if asked)."""
    if cfg.data.source == "synthetic":
        s = cfg.data.synthetic
        target = out / "data"
        manifest = target / "manifest.csv"
        if not manifest.exists():
            generate_synthetic_dataset(
                target,
                sites=s.sites,
                images_per_site=s.images_per_site,
                classes=s.classes,
                dims=s.dims,
                size=s.size,
                channels=s.channels,
                seed=s.seed,
            )
        return manifest, target
    root = cfg.data_root()
    if not root.is_dir():
        raise ConfigError(
            f"{cfg.source_path}: field 'data.root' is {str(root)!r}, which is not a directory "
            "(relative roots are taken from the current directory; override with --set data.root=...)"
        )
    return root / cfg.data.manifest, root


def build_expert(cfg: Config, num_classes: int) -> SiteExpert:
    """A fresh expert of the configured backbone for this run's geometry."""
    return SiteExpert(
        backbone=cfg.expert.backbone,
        spatial_dims=len(cfg.data.spatial_size),
        in_channels=cfg.data.channels,
        feature_dim=cfg.expert.out_channels,
        num_classes=num_classes,
        params=dict(cfg.expert.params),
    )


def prepare_run(cfg: Config, out: Path, console: Console | None = None) -> tuple[RunDir, RunData]:
    """Stage 1: write config, schema and splits (or check them on resume) and load the images."""
    run = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if run.has("config.yaml"):
        # Compared as configs, not text: a field added to sitefusion later (with its default)
        # does not make an existing run directory unusable.
        stored = config_from_dict(yaml.safe_load(run.read_text("config.yaml")), str(out))
        if config_to_dict(stored) != config_to_dict(cfg):
            raise ConfigError(
                f"{out / 'config.yaml'}: this run directory was trained with a different "
                "configuration; use a new --out or the same config and overrides"
            )
    else:
        run.write_text("config.yaml", resolved)
        run.set_info(run_id=uuid.uuid4().hex[:12], status="training")

    manifest_path, image_root = resolve_data(cfg, out)
    manifest = load_manifest(manifest_path, cfg.data, image_root=image_root)
    if run.has("splits.csv"):
        splits = load_splits(run.verify("splits.csv"))
        check_leakage(manifest, splits)
    else:
        splits = make_splits(manifest, cfg.split)
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
    with make_progress(console) as progress:
        task = progress.add_task("reading images", total=len(manifest), info="")
        images = load_image_stack(
            [r.path for r in manifest.records],
            cfg.data.spatial_size,
            cfg.data.channels,
            on_progress=lambda k: progress.advance(task, k),
        )
    _log(console, f"read {len(manifest)} images in {time.perf_counter() - t0:.1f} s")
    data = RunData(
        manifest=manifest,
        splits=splits,
        images=images,
        labels=np.array([manifest.label_index(r) for r in manifest.records], dtype=np.int64),
        sites=np.array([r.site for r in manifest.records]),
        ids=[r.id for r in manifest.records],
    )
    return run, data


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


def normalize_rows(
    bank: NormalizerBank, data: RunData, rows: np.ndarray, pooled: bool = False
) -> np.ndarray:
    """Images of ``rows`` normalized by their own site's normalizer (or the pooled one)."""
    out = np.empty((len(rows), *data.images.shape[1:]), dtype=np.float32)
    for j, i in enumerate(rows):
        if pooled:
            out[j] = bank.pooled_.transform(data.images[i])
        else:
            out[j] = bank.transform(data.images[i], str(data.sites[i])).array
    return out


def _initial_state(cfg: Config, run: RunDir, num_classes: int) -> dict[str, torch.Tensor]:
    """Stage 3: the shared initial expert weights."""
    if run.has("experts/init.safetensors"):
        return run.read_tensors("experts/init.safetensors")
    torch.manual_seed(cfg.seed)
    state, source = initial_weights(build_expert(cfg, num_classes), cfg.expert.pretrained)
    run.set_info(pretrained=source)  # before the weights: a resume skips this stage once they exist
    run.write_tensors("experts/init.safetensors", state)
    return state


def _train_network(
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
) -> None:
    num_classes = len(data.manifest.classes)
    init = _initial_state(cfg, run, num_classes)
    model = build_expert(cfg, num_classes)
    model.load_state_dict(init)
    _set_threads(cfg)
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
    run.write_tensors(f"{stem}.safetensors", result.state)
    run.write_json(
        f"{stem}.json",
        {
            "expert": model.describe(),
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
) -> bool:
    """Stage 4 for one site; returns ``False`` if it was already trained."""
    if site not in data.manifest.sites:
        raise UnknownChoiceError("site", site, data.manifest.sites)
    stem = f"experts/{site}"
    if run.has(f"{stem}.safetensors"):
        return False
    tr, va = data.rows("train", site=site), data.rows("val", site=site)
    _log(console, f"[bold]expert {site}[/]: {len(tr)} training, {len(va)} validation images")
    _train_network(
        cfg,
        run,
        data,
        stem,
        normalize_rows(bank, data, tr),
        data.labels[tr],
        normalize_rows(bank, data, va),
        data.labels[va],
        cfg.seed + 1 + data.manifest.sites.index(site),
        console,
    )
    return True


def train_pooled(
    cfg: Config, run: RunDir, data: RunData, bank: NormalizerBank, console: Console | None = None
) -> bool:
    """Stage 5: pooled training on the union of all training and fusion splits."""
    if run.has("baselines/pooled.safetensors"):
        return False
    tr, va = data.rows("train", "fusion"), data.rows("val")
    _log(console, f"[bold]pooled baseline[/]: {len(tr)} training, {len(va)} validation images")
    _train_network(
        cfg,
        run,
        data,
        "baselines/pooled",
        normalize_rows(bank, data, tr, pooled=True),
        data.labels[tr],
        normalize_rows(bank, data, va, pooled=True),
        data.labels[va],
        cfg.seed,
        console,
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


@dataclass(frozen=True)
class HeadRows:
    """The rows of a feature cache a fusion head learns from, and which experts it may use.

    ``presence[j, e]`` is ``False`` when expert ``e`` trained on (or early-stopped with) image
    ``j``: the fusion never sees a feature an expert computed on its own training images.
    """

    positions: np.ndarray  # [M] rows of the feature cache
    labels: np.ndarray  # [M]
    groups: np.ndarray  # [M]
    presence: np.ndarray  # [M, E] bool
    home: np.ndarray  # [M, E] bool: the expert of the image's own site
    n_fusion: int
    n_cross_fit: int


@dataclass(frozen=True)
class RowInfo:
    """What the fusion needs to know of one image: its site, label index, group and split."""

    site: str
    label: int
    group: str
    split: str


def select_head_rows(
    ids: Sequence[str], info: Mapping[str, RowInfo], experts: Sequence[str], cross_fit: bool
) -> HeadRows:
    """The rows of a feature cache (image ``ids`` in cache order) a fusion learns from.

    Fusion-split rows with every expert present and, with ``cross_fit``, the expert-training
    rows of every site with that site's own expert masked out. Test rows never.
    """
    experts = list(experts)
    positions, presence, home = [], [], []
    n_fusion = n_cross = 0
    for j, rid in enumerate(ids):
        row = info[rid]
        mask = np.ones(len(experts), dtype=bool)
        own = np.array([e == row.site for e in experts])
        if row.split == "fusion":
            n_fusion += 1
        elif row.split in ("train", "val") and cross_fit:
            mask[own] = False
            n_cross += 1
        else:
            continue
        positions.append(j)
        presence.append(mask)
        home.append(own)
    shape = (len(positions), len(experts))
    pres = np.array(presence, dtype=bool).reshape(shape)
    owns = np.array(home, dtype=bool).reshape(shape)
    # The contract of the design, checked every time: no expert's feature of an image it
    # trained on reaches the fusion, and no test image does at all.
    chosen = [info[ids[j]] for j in positions]
    for row, m, o in zip(chosen, pres, owns, strict=True):
        if row.split == "test" or (row.split in ("train", "val") and (m & o).any()):
            raise ArtifactError(
                f"fusion rows include a {row.split}-split image of {row.site} with its own "
                "site's expert present"
            )
    return HeadRows(
        positions=np.array(positions, dtype=np.int64),
        labels=np.array([row.label for row in chosen], dtype=np.int64),
        groups=np.array([row.group for row in chosen]),
        presence=pres,
        home=owns,
        n_fusion=n_fusion,
        n_cross_fit=n_cross,
    )


def head_rows(cfg: Config, data: RunData, feats: ExpertFeatures) -> HeadRows:
    """:func:`select_head_rows` for a run being trained."""
    info = {
        r.id: RowInfo(r.site, int(label), r.group, data.splits[r.id])
        for r, label in zip(data.manifest.records, data.labels, strict=True)
    }
    return select_head_rows(feats.ids, info, data.manifest.sites, cfg.fusion.cross_fit)


def _out_of_fold_temperature(
    cfg: Config,
    mode: str,
    x: np.ndarray,
    xl: np.ndarray,
    rows: HeadRows,
    num_classes: int,
    prior: np.ndarray | None = None,
) -> dict[str, Any]:
    """Temperature of the fusion fitted on out-of-fold logits (5 folds by group)."""
    from sklearn.model_selection import GroupKFold

    n_splits = min(5, len(set(rows.groups.tolist())))
    oof = np.zeros((len(rows.labels), num_classes), dtype=np.float32)
    for k, (tr, te) in enumerate(GroupKFold(n_splits=n_splits).split(x, rows.labels, rows.groups)):
        head, _ = fit_fusion(
            mode,
            x[tr],
            xl[tr],
            rows.labels[tr],
            cfg=cfg.fusion,
            num_classes=num_classes,
            seed=cfg.seed + 100 + k,
            presence=rows.presence[tr],
            home=rows.home[tr],
            expert_dropout=cfg.fusion.expert_dropout,
        )
        with torch.inference_mode():
            out = head(
                torch.from_numpy(np.ascontiguousarray(x[te])),
                torch.from_numpy(np.ascontiguousarray(xl[te])),
                torch.from_numpy(rows.presence[te]),
                torch.from_numpy(rows.home[te]),
            )
        oof[te] = out.logits.numpy()
    if prior is not None:  # the temperature scales the logits the run predicts with
        oof = apply_site_prior(oof, rows.home, prior)
    return temperature_record(
        oof,
        rows.labels,
        f"out-of-fold logits of the fusion's training rows ({n_splits} folds by group)",
    )


def temperature_record(logits: np.ndarray, labels: np.ndarray, fitted_on: str) -> dict[str, Any]:
    """The ``calibration`` entry of a fusion's JSON: the temperature fitted on ``logits [N, C]``
    and ``labels [N]``, or 1 (no scaling) with a ``note`` when the fit runs onto a bound.

    A bound means the images' likelihood keeps improving beyond it: on a small held-out set
    that the fusion classifies without error the fit drives ``T`` to its floor and would make
    every later prediction over-confident (the demo's 16 held-out images did, and raised the
    test ECE), so no temperature is applied then.
    """
    from sitefusion.evaluation.calibration import TEMPERATURE_BOUNDS as bounds
    from sitefusion.evaluation.calibration import fit_temperature

    t = float(fit_temperature(logits, labels, bounds))
    record: dict[str, Any] = {"temperature": t, "fitted_on": fitted_on, "n": len(labels)}
    if t in bounds:
        how = "classified without error" if t == bounds[0] else "mostly misclassified"
        record["temperature"] = 1.0
        record["note"] = (
            f"on the {len(labels)} images it was fitted on ({how}) the likelihood "
            f"keeps improving up to the bound T = {t:g}, so no fitted value carries to new images"
        )
    return record


def calibration_holdout(
    cfg: Config, rows: HeadRows, data: RunData, feats: ExpertFeatures
) -> np.ndarray:
    """``[M]`` bool: rows held out of a fine-tuned fusion's training to fit its temperature.

    A seeded ``fusion.calibration_fraction`` of the fusion split's groups (all experts present).
    """
    fusion_rows = np.array([data.splits[feats.ids[j]] == "fusion" for j in rows.positions])
    groups = sorted(set(rows.groups[fusion_rows].tolist()))
    rng = np.random.default_rng([cfg.seed, 4242])
    k = max(1, round(cfg.fusion.calibration_fraction * len(groups)))
    chosen = set(rng.choice(np.array(groups, dtype=object), size=k, replace=False).tolist())
    return fusion_rows & np.array([g in chosen for g in rows.groups])


def _finetune(
    cfg: Config,
    run: RunDir,
    data: RunData,
    bank: NormalizerBank,
    name: str,
    head: FusionClassifier,
    experts: list[SiteExpert],
    rows: HeadRows,
    train_rows: np.ndarray,
    calib_rows: np.ndarray,
    console: Console | None,
    prior: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fine-tune ``experts`` with ``head`` end to end; write the experts; fit the temperature.

    ``prior [E, K]``: the site-prior offsets the run predicts with (held-out logits include them).
    """
    pos = {rid: i for i, rid in enumerate(data.ids)}
    cache_ids = load_feature_cache(run, "features/trained.safetensors").ids
    data_rows = np.array([pos[cache_ids[j]] for j in rows.positions])
    images = normalize_rows(bank, data, data_rows[train_rows])
    system = FusedSystem(experts, head)
    num_classes = len(data.manifest.classes)
    epochs = cfg.fusion.finetune_epochs * cfg.fusion.finetune_soup
    x_cal = normalize_rows(bank, data, data_rows[calib_rows]) if calib_rows.any() else None

    def holdout_logits(model: FusedSystem) -> np.ndarray:
        """Logits on the held-out fusion-split images (never trained on)."""
        with torch.inference_mode():
            out = model(torch.from_numpy(x_cal), None, torch.from_numpy(rows.home[calib_rows]))
        logits = out.logits.numpy()
        return logits if prior is None else apply_site_prior(logits, rows.home[calib_rows], prior)

    member_logits: list[np.ndarray] = []
    with make_progress(console) as progress:
        task = progress.add_task(f"fine-tune {name}", total=epochs * len(images), info="")
        curves = finetune_soup(
            system,
            images,
            rows.labels[train_rows],
            rows.presence[train_rows],
            rows.home[train_rows],
            cfg=cfg.fusion,
            num_classes=num_classes,
            seed=cfg.seed,
            batch_size=cfg.training.batch_size,
            colour_jitter=cfg.training.colour_jitter if cfg.training.augment else 0.0,
            on_epoch=lambda ep, loss: progress.update(
                task, info=f"epoch {ep + 1}/{epochs} loss {loss:.3f}"
            ),
            on_batch=lambda k: progress.advance(task, k),
            on_member=(
                (lambda m, model: member_logits.append(holdout_logits(model)))
                if x_cal is not None and cfg.fusion.finetune_soup > 1
                else None
            ),
        )
    run.write_tensors(
        f"fusion/{name}.experts.safetensors", expert_states(experts, data.manifest.sites)
    )
    meta: dict[str, Any] = {
        "epochs": cfg.fusion.finetune_epochs,
        "soup": cfg.fusion.finetune_soup,
        "loss_curve": np.mean(curves, axis=0).tolist(),
    }
    if len(curves) > 1:
        meta["member_loss_curves"] = curves
    logits = holdout_logits(system) if x_cal is not None else None
    if member_logits and logits is not None:
        # A soup is only as good as its members' agreement on one basin; say so when the
        # held-out images show it measurably below its best member, not on every small dip.
        check = compare_soup_to_members(
            rows.labels[calib_rows], rows.groups[calib_rows], member_logits, logits, seed=cfg.seed
        )
        meta["soup_check"] = {
            **check,
            "on": f"{int(calib_rows.sum())} held-out fusion-split images",
        }
        best = max(check["balanced_accuracy_members"])
        lo, hi = check["soup_minus_best_member"]["ci95"]
        summary = (
            f"{name}: soup of {len(member_logits)} fine-tuned copies "
            f"{check['balanced_accuracy_soup']:.3f} balanced accuracy on the held-out "
            f"fusion-split images, best member {best:.3f} (difference 95% CI "
            f"{lo:+.3f} to {hi:+.3f})"
        )
        if check["below_best_member"]:
            _log(
                console,
                f"[yellow]{summary}: the soup is measurably worse; it is kept "
                "(fusion.finetune_soup)[/]",
            )
        else:
            _log(console, f"{summary}: within noise")
    if logits is not None:
        meta["calibration"] = temperature_record(
            logits,
            rows.labels[calib_rows],
            f"{int(calib_rows.sum())} held-out fusion-split images "
            f"({cfg.fusion.calibration_fraction:.0%} of its groups)",
        )
    return meta


def head_site_prior(
    cfg: Config, data: RunData, rows: HeadRows, keep: np.ndarray
) -> np.ndarray | None:
    """``[E, K]`` site-prior offsets from the class counts of a head's training rows, or None."""
    if cfg.fusion.site_prior <= 0:
        return None
    sites = data.manifest.sites
    counted = keep & rows.home.any(1)  # rows of a site with an expert
    return site_prior_offsets(
        rows.labels[counted],
        np.asarray(sites)[rows.home[counted].argmax(1)],
        sites,
        len(data.manifest.classes),
        strength=cfg.fusion.site_prior,
        floor=cfg.fusion.site_prior_floor,
    )


def train_heads(
    cfg: Config,
    run: RunDir,
    data: RunData,
    bank: NormalizerBank,
    feats: ExpertFeatures,
    random_feats: ExpertFeatures | None,
    console: Console | None = None,
) -> None:
    """Stage 7: fusion heads (fine-tuned end to end if configured), their temperature, stacking,
    and the random-feature control."""
    num_classes = len(data.manifest.classes)
    rows = head_rows(cfg, data, feats)
    finetune = cfg.fusion.finetune_epochs > 0
    calib = (
        calibration_holdout(cfg, rows, data, feats)
        if finetune
        else np.zeros(len(rows.labels), bool)
    )
    f, lg = feats.features[rows.positions], feats.logits[rows.positions]
    product = FUSION_METHOD_NAMES[cfg.fusion.modes[0]]
    jobs: list[tuple[str, str, np.ndarray, np.ndarray]] = [
        (FUSION_METHOD_NAMES[mode], mode, f, lg) for mode in cfg.fusion.modes
    ]
    if random_feats is not None:
        if random_feats.ids != feats.ids:
            raise ArtifactError("the random and trained feature caches hold different images")
        jobs.append(
            (
                "random_features",
                cfg.fusion.modes[0],
                random_feats.features[rows.positions],
                random_feats.logits[rows.positions],
            )
        )
    for name, mode, x, xl in jobs:
        rel = f"fusion/{name}.safetensors"
        if run.has(rel):
            continue
        t0 = time.perf_counter()
        tuned = finetune and name in (product, "random_features")
        keep = ~calib if tuned else np.ones(len(rows.labels), bool)
        model, curve = fit_fusion(
            mode,
            x[keep],
            xl[keep],
            rows.labels[keep],
            cfg=cfg.fusion,
            num_classes=num_classes,
            seed=cfg.seed,
            presence=rows.presence[keep],
            home=rows.home[keep],
            expert_dropout=cfg.fusion.expert_dropout,
        )
        meta: dict[str, Any] = {
            "config": model.config,
            "loss_curve": curve,
            "n_fusion": rows.n_fusion,
            "n_cross_fit": rows.n_cross_fit,
        }
        prior = head_site_prior(cfg, data, rows, keep)
        if prior is not None:
            meta["site_prior"] = {
                "strength": cfg.fusion.site_prior,
                "floor": cfg.fusion.site_prior_floor,
                "sites": list(data.manifest.sites),
                "offsets": prior.tolist(),
                "fitted_on": f"class counts of the head's {int(keep.sum())} training rows",
            }
        if tuned:
            state_rel = "experts/init.safetensors" if name == "random_features" else None
            experts = []
            for site in data.manifest.sites:
                expert = build_expert(cfg, num_classes)
                expert.load_state_dict(run.read_tensors(state_rel or f"experts/{site}.safetensors"))
                experts.append(expert)
            meta["finetune"] = _finetune(
                cfg, run, data, bank, name, model, experts, rows, keep, calib, console, prior
            )
            if "calibration" in meta["finetune"]:
                meta["calibration"] = meta["finetune"].pop("calibration")
        elif name == product:
            meta["calibration"] = _out_of_fold_temperature(
                cfg, mode, x, xl, rows, num_classes, prior
            )
        meta["seconds"] = time.perf_counter() - t0
        # The head last: its presence marks the method as finished (resume skips it).
        run.write_json(f"fusion/{name}.json", meta)
        run.write_tensors(rel, model.state_dict())
        extra = f" + {rows.n_cross_fit} cross-fitted" if rows.n_cross_fit else ""
        how = f", experts fine-tuned {cfg.fusion.finetune_epochs} epochs" if tuned else ""
        _log(
            console, f"fusion head {name} ({mode}): {rows.n_fusion} fusion-split images{extra}{how}"
        )
    if cfg.baselines.stacking and not run.has("baselines/stacking.json"):
        only = rows.presence.all(1)  # stacking cannot mask experts: fusion split only
        run.write_json(
            "baselines/stacking.json",
            fit_stacking(f[only], lg[only], rows.labels[only], num_classes).to_json(),
        )
        _log(console, "stacking (LogisticRegression) fitted on the fusion split")


def build_weight_average(cfg: Config, run: RunDir, data: RunData) -> None:
    """One-shot parameter averaging of the experts, weighted by their training-set sizes."""
    if run.has("baselines/weight_average.safetensors"):
        return
    sites = data.manifest.sites
    states = [run.read_tensors(f"experts/{s}.safetensors") for s in sites]
    sizes = [float(len(data.rows("train", site=s))) for s in sites]
    run.write_tensors("baselines/weight_average.safetensors", average_state_dicts(states, sizes))


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
    _set_threads(cfg)
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
    _initial_state(cfg, run, num_classes)

    for site in sites if sites is not None else data.manifest.sites:
        t = time.perf_counter()
        if train_expert(cfg, run, data, bank, site, console):
            timings[f"expert:{site}"] = time.perf_counter() - t
    if sites is not None:
        return {"run_id": run.read_manifest().get("run_id"), "timings": timings, "complete": False}

    if cfg.baselines.pooled:
        t = time.perf_counter()
        if train_pooled(cfg, run, data, bank, console):
            timings["pooled"] = time.perf_counter() - t

    t = time.perf_counter()
    experts = load_experts(cfg, run, data.manifest.sites, num_classes)
    feats = cache_features(cfg, run, data, bank, "features/trained.safetensors", experts, console)
    random_feats = None
    if cfg.baselines.random_features:
        init = run.read_tensors("experts/init.safetensors")
        untrained = []
        for _ in data.manifest.sites:
            e = build_expert(cfg, num_classes)
            e.load_state_dict(init)
            untrained.append(e.eval())
        random_feats = cache_features(
            cfg, run, data, bank, "features/random.safetensors", untrained, console
        )
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    train_heads(cfg, run, data, bank, feats, random_feats, console)
    if cfg.baselines.weight_average:
        build_weight_average(cfg, run, data)
    timings["fusion_and_baselines"] = time.perf_counter() - t
    previous = run.read_manifest().get("timings", {})
    run.set_info(status="complete", timings={**previous, **timings})
    return {"run_id": run.read_manifest().get("run_id"), "timings": timings, "complete": True}
