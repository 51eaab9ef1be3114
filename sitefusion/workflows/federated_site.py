"""A site's side of the federation: everything it does with its own data, one phase per message.

A site is set up by its operator (``sitefusion site``), not by the coordinator: its name, its
manifest and image root, and a work folder, all local paths that never leave the site
(:class:`~sitefusion.federated.setup.SiteSetup`). Each message from the coordinator names a phase; :func:`handle` runs it
with the existing single-site code on the site's rows only and returns what may travel:

``hello``
    the site's name (the coordinator learns which node is which site only by asking).
``groups``
    with a group key (:class:`~sitefusion.federated.setup.SiteSetup`): one keyed hash (HMAC-SHA256
    under the consortium's key, which the coordinator does not hold) per group of the site's rows,
    with its number of images, and a check value of the key. The coordinator finds the groups
    held by more than one site and gives each its *home site* (most images; ties by site name),
    as a central split does. Without a key: nothing (groups are not reconciled).
``home_splits``
    (only sites that are home to a shared group) the split the site gives those groups. Reply:
    hash -> split.
``prepare``
    the site's run directory in ``<workdir>/<run id>``: its rows of the manifest (other sites'
    rows are dropped before any image is read), the split by group with the leakage check (a
    shared group at home elsewhere gets its home site's split, so the split equals the one of
    the whole manifest in one place), and its normalizer fitted on its training split. Reply:
    the normalizer's JSON and the class counts per split.
``expert``
    the expert trained from the coordinator's shared initial weights. Reply: its weights and
    its training curve (per-epoch losses and validation balanced accuracy).
``head_setup``
    every expert's features of the site's fusion-split images (and, with ``cross_fit``, of its
    expert-training images with its own expert masked out) cached at the site. Reply: the count,
    sum and sum of squares of the head's inputs and the class counts of those rows, and the
    count, sum and sum of outer products of the experts' mean feature over the fusion-split
    images (the scorer's out-of-distribution reference); never over fewer than
    :data:`MIN_AGGREGATE` images.
``ood_threshold``
    a histogram of the site's fusion-split distances to that reference (its threshold).
``head_round`` / ``finetune_round`` / ``fedavg_round``
    a few local epochs of the fusion head (on the cached features), of the head and copies of
    every expert end to end (on the normalized images of the head's rows, each row's own expert
    masked as in the head), or of the FedAvg network (on the site's normalized training
    images), from the global weights. Reply: the new weights, the number of examples and the
    loss.
``evaluate``
    the finished run directory, sent by the coordinator, predicts every method on the site's
    test split. Reply: per-image class probabilities and labels, keyed by group codes that are
    drawn at random for this reply (the coordinator cannot map them back to lesions or
    patients), never image ids.

Nothing else travels: no image, no image id or group id (only keyed hashes of group ids, which
the coordinator cannot reverse without the key), no feature vector of an image.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sitefusion.config import Config, config_from_dict, replace
from sitefusion.data import Manifest, group_splits, load_manifest
from sitefusion.errors import ConfigError, SiteFusionError
from sitefusion.experts import build_expert
from sitefusion.federated.payload import Payload
from sitefusion.federated.setup import SiteSetup
from sitefusion.fusion import FusionClassifier
from sitefusion.fusion.system import FusedSystem
from sitefusion.methods import LoadedRun
from sitefusion.rundir import RunDir
from sitefusion.scoring.ood import MahalanobisOOD
from sitefusion.training.context import RowInfo, RunData, normalize_rows, select_head_rows
from sitefusion.training.features import ExpertFeatures, load_feature_cache
from sitefusion.training.federated import (
    feature_moments,
    local_head_update,
    local_network_update,
)
from sitefusion.training.finetune import finetune_fusion
from sitefusion.training.stages import (
    cache_features,
    fit_normalizers,
    set_threads,
    train_expert,
)
from sitefusion.workflows.evaluate import predict_manifest
from sitefusion.workflows.train import only_site, prepare_run, resolve_data

__all__ = ["MIN_AGGREGATE", "PHASES", "handle"]

PHASES = (
    "hello",
    "groups",
    "home_splits",
    "prepare",
    "expert",
    "head_setup",
    "head_round",
    "finetune_round",
    "ood_threshold",
    "fedavg_round",
    "evaluate",
)

MIN_AGGREGATE = 10
"""Fewest images a site sums over before it sends an aggregate of them."""
"""The phases a site answers, in the order the coordinator runs them."""

_RUN_ID = re.compile(r"^[0-9a-f]{6,64}$")


def _site_config(setup: SiteSetup, meta: Mapping[str, Any]) -> Config:
    """The coordinator's config with this site's own data paths."""
    raw = meta.get("config")
    if not isinstance(raw, Mapping):
        raise ConfigError("coordinator message: no 'config' mapping")
    cfg = config_from_dict(dict(raw), "<coordinator config>")
    if cfg.data.source != "csv":
        raise ConfigError(
            f"federated sites read their own CSV manifest; the config's data.source is "
            f"{cfg.data.source!r}"
        )
    data = replace(cfg.data, root=str(setup.root), manifest=str(setup.manifest))
    return replace(cfg, data=data)


def _run_dir(setup: SiteSetup, meta: Mapping[str, Any]) -> Path:
    run_id = str(meta.get("run_id", ""))
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"coordinator message: run_id {run_id!r} is not a hexadecimal run id")
    return setup.workdir / run_id


@dataclass
class _SiteState:
    cfg: Config
    run: RunDir
    data: RunData
    sites: list[str]


def _state(
    setup: SiteSetup,
    meta: Mapping[str, Any],
    *,
    images: bool = True,
    fixed_splits: Mapping[str, str] | None = None,
) -> _SiteState:
    """The site's run directory and data. Only the ``prepare`` phase (``fixed_splits`` given)
    makes the splits; a later phase without them is an error, never a second, different split."""
    cfg = _site_config(setup, meta)
    set_threads(cfg)
    out = _run_dir(setup, meta)
    if fixed_splits is None and not (out / "splits.csv").is_file():
        raise SiteFusionError(
            f"site {setup.site}: {out} has no splits.csv (the prepare phase has not run here, "
            "or the site's work folder was removed); rerun the federation from a new --out"
        )
    run, data = prepare_run(
        cfg, out, site=setup.site, fixed_splits=fixed_splits, load_images=images
    )
    sites = [str(s) for s in meta.get("sites", [setup.site])]
    return _SiteState(cfg, run, data, sites)


_KEY_CHECK = b"sitefusion group key check"


def _group_tokens(setup: SiteSetup, meta: Mapping[str, Any]) -> tuple[Manifest, dict[str, str]]:
    """The site's manifest rows and ``{keyed hash: group}`` of its groups (empty without a key)."""
    cfg = _site_config(setup, meta)
    manifest_path, root = resolve_data(cfg, _run_dir(setup, meta), generate=False)
    manifest = only_site(
        load_manifest(
            manifest_path,
            cfg.data,
            image_root=root,
            check_files=False,
            allow_outside_root=cfg.data.allow_outside_root,
        ),
        setup.site,
    )
    key = setup.read_group_key()
    if key is None:
        return manifest, {}
    tokens = {
        hmac.new(key, r.group.encode("utf-8"), hashlib.sha256).hexdigest()[:32]: r.group
        for r in manifest.records
    }
    return manifest, tokens


def _groups(setup: SiteSetup, payload: Payload) -> Payload:
    key = setup.read_group_key()
    if key is None:
        return Payload(meta={"site": setup.site, "key_check": None, "tokens": [], "counts": []})
    manifest, tokens = _group_tokens(setup, payload.meta)
    per_group = Counter(r.group for r in manifest.records)
    order = sorted(tokens)  # hash order: says nothing about the manifest's row order
    return Payload(
        meta={
            "site": setup.site,
            "key_check": hmac.new(key, _KEY_CHECK, hashlib.sha256).hexdigest()[:16],
            "tokens": order,
            "counts": [per_group[tokens[t]] for t in order],
        }
    )


def _map_tokens(setup: SiteSetup, tokens: dict[str, str], wanted: Any, what: str) -> list[str]:
    unknown = [t for t in wanted if t not in tokens]
    if unknown:
        raise SiteFusionError(
            f"site {setup.site}: the coordinator's {what} names {len(unknown)} group hash(es) "
            "this site does not hold (was the manifest or the group key changed mid-run?)"
        )
    return [tokens[t] for t in wanted]


def _home_splits(setup: SiteSetup, payload: Payload) -> Payload:
    manifest, tokens = _group_tokens(setup, payload.meta)
    away = _map_tokens(setup, tokens, payload.meta.get("away", []), "away list")
    home = list(payload.meta.get("home", []))
    _map_tokens(setup, tokens, home, "home list")
    cfg = _site_config(setup, payload.meta)
    splits = group_splits(manifest, cfg.split, exclude=frozenset(away))
    return Payload(meta={"site": setup.site, "splits": {t: splits[tokens[t]] for t in home}})


def _experts_hash(payload: Payload, sites: list[str]) -> str:
    digest = hashlib.sha256()
    for site in sites:
        for key, tensor in sorted(payload.prefixed(site).items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _head_cache(st: _SiteState, tag: str) -> tuple[ExpertFeatures, Any]:
    """The cached features of the experts ``tag`` and the fusion's rows among them."""
    rel = f"federation/features-{tag}.safetensors"
    if not st.run.has(rel):
        raise SiteFusionError(
            f"{st.run.root}: no cached features for experts {tag}; the coordinator must run "
            "the head_setup phase first"
        )
    feats = load_feature_cache(st.run, rel)
    info = {
        r.id: RowInfo(r.site, int(label), r.group, st.data.splits[r.id])
        for r, label in zip(st.data.manifest.records, st.data.labels, strict=True)
    }
    rows = select_head_rows(feats.ids, info, st.sites, bool(st.cfg.fusion.cross_fit))
    return feats, rows


def _head(meta: Mapping[str, Any]) -> FusionClassifier:
    return FusionClassifier.from_config(meta["head_config"])


def _class_counts(labels: np.ndarray, k: int) -> list[int]:
    return np.bincount(labels, minlength=k).astype(int).tolist()


def _round_seed(st: _SiteState, meta: Mapping[str, Any], site: str) -> int:
    """The round's seed plus the site's position: the seeds of the in-process FedAvg
    (:func:`~sitefusion.methods.fedavg.fedavg_round_seed`)."""
    return int(meta["seed"]) + st.sites.index(site)


def _prepare(setup: SiteSetup, payload: Payload) -> Payload:
    fixed_tokens = dict(payload.meta.get("fixed", {}))
    fixed: dict[str, str] = {}
    if fixed_tokens:
        _, tokens = _group_tokens(setup, payload.meta)
        groups = _map_tokens(setup, tokens, list(fixed_tokens), "fixed splits")
        fixed = {g: str(fixed_tokens[t]) for g, t in zip(groups, fixed_tokens, strict=True)}
    st = _state(setup, payload.meta, fixed_splits=fixed)
    fit_normalizers(st.cfg, st.run, st.data)
    k = len(st.data.manifest.classes)
    counts = {
        split: _class_counts(st.data.labels[st.data.rows(split)], k)
        for split in ("train", "val", "fusion", "test")
    }
    normalizer = st.run.verify(f"normalizers/{setup.site}.json").read_text(encoding="utf-8")
    return Payload(meta={"site": setup.site, "counts": counts, "normalizer": normalizer})


def _expert(setup: SiteSetup, payload: Payload) -> Payload:
    st = _state(setup, payload.meta)
    bank = fit_normalizers(st.cfg, st.run, st.data)
    if not st.run.has("experts/init.safetensors"):
        st.run.write_tensors("experts/init.safetensors", payload.prefixed("init"))
    # expert.start 'fedavg': the coordinator sends the FedAvg model to fine-tune from.
    start = payload.prefixed("start") or None
    train_expert(st.cfg, st.run, st.data, bank, setup.site, sites=st.sites, start=start)
    summary = st.run.read_json(f"experts/{setup.site}.json")
    return Payload(
        meta={
            "site": setup.site,
            "start": summary["start"],
            "n_train": summary["n_train"],
            "n_val": summary["n_val"],
            "best_epoch": summary["best_epoch"],
            "history": summary["history"],
            "seconds": summary["seconds"],
        },
        tensors=st.run.read_tensors(f"experts/{setup.site}.safetensors"),
    )


def _head_setup(setup: SiteSetup, payload: Payload) -> Payload:
    st = _state(setup, payload.meta)
    bank = fit_normalizers(st.cfg, st.run, st.data)
    tag = _experts_hash(payload, st.sites)
    rel = f"federation/features-{tag}.safetensors"
    if not st.run.has(rel):
        k = len(st.data.manifest.classes)
        experts = []
        for site in st.sites:
            expert = build_expert(st.cfg, k)
            expert.load_state_dict(payload.prefixed(site))
            experts.append(expert.eval())
        cache_features(st.cfg, st.run, st.data, bank, rel, experts)
    feats, rows = _head_cache(st, tag)
    fusion_rows = np.array([st.data.splits[i] == "fusion" for i in feats.ids])
    for what, n in (
        ("fusion rows", len(rows.positions)),
        ("fusion-split images", int(fusion_rows.sum())),
    ):
        if n < MIN_AGGREGATE:
            raise SiteFusionError(
                f"site {setup.site}: {n} {what}; aggregates of fewer than {MIN_AGGREGATE} images "
                "are not sent (they would describe single images)"
            )
    pooled = feats.features[fusion_rows].astype(np.float64).mean(1)  # [N, D]: the OOD reference
    head = _head(payload.meta)
    moments = feature_moments(head, feats.features[rows.positions], feats.logits[rows.positions])
    k = int(payload.meta["head_config"]["num_classes"])
    counts = torch.tensor(_class_counts(rows.labels, k), dtype=torch.float64)
    return Payload(
        meta={
            "site": setup.site,
            "experts": tag,
            "n_fusion": rows.n_fusion,
            "n_cross_fit": rows.n_cross_fit,
        },
        tensors={
            **{f"moments.{k}": v for k, v in moments.items()},
            "class_counts": counts,
            "ood.count": torch.tensor([float(len(pooled))], dtype=torch.float64),
            "ood.sum": torch.from_numpy(pooled.sum(0)),
            "ood.outer": torch.from_numpy(pooled.T @ pooled),
        },
    )


def _ood_threshold(setup: SiteSetup, payload: Payload) -> Payload:
    """A histogram of the Mahalanobis distances of the site's fusion-split images to the
    federation's OOD reference (counts per bin, never a distance of one image)."""
    st = _state(setup, payload.meta, images=False)
    feats, _ = _head_cache(st, str(payload.meta["experts"]))
    fusion_rows = np.array([st.data.splits[i] == "fusion" for i in feats.ids])
    state = {k: v.numpy() for k, v in payload.prefixed("ood").items()}
    ood = MahalanobisOOD.from_state(state, 0.99)
    edges = payload.tensors["edges"].numpy()
    scores = np.clip(ood.score(feats.features[fusion_rows]), edges[0], edges[-1])
    counts, _ = np.histogram(scores, bins=edges)
    return Payload(
        meta={"site": setup.site}, tensors={"counts": torch.from_numpy(counts.astype(np.float64))}
    )


def _head_round(setup: SiteSetup, payload: Payload) -> Payload:
    st = _state(setup, payload.meta, images=False)
    feats, rows = _head_cache(st, str(payload.meta["experts"]))
    head = _head(payload.meta)
    head.load_state_dict(payload.prefixed("head"))
    update = local_head_update(
        head,
        feats.features[rows.positions],
        feats.logits[rows.positions],
        rows.labels,
        rows.presence,
        cfg=st.cfg.fusion,
        num_classes=int(payload.meta["head_config"]["num_classes"]),
        epochs=int(payload.meta["epochs"]),
        lr=float(payload.meta["lr"]),
        seed=_round_seed(st, payload.meta, setup.site),
        mu=float(payload.meta.get("mu", 0.0)),
        class_weight=payload.tensors["class_weight"].float(),
    )
    return Payload(
        meta={"site": setup.site, "examples": update.examples, "loss": update.loss},
        tensors=update.state,
    )


def _finetune_round(setup: SiteSetup, payload: Payload) -> Payload:
    rel = "federation/finetune_inputs.safetensors"
    st = _state(setup, payload.meta, images=False)
    k = int(payload.meta["head_config"]["num_classes"])
    if not st.run.has(rel):  # the first round: the head rows' normalized images, kept at the site
        st = _state(setup, payload.meta)
        feats, rows = _head_cache(st, str(payload.meta["experts"]))
        pos = {rid: i for i, rid in enumerate(st.data.ids)}
        data_rows = np.array([pos[feats.ids[j]] for j in rows.positions])
        bank = fit_normalizers(st.cfg, st.run, st.data)
        x = normalize_rows(bank, st.data, data_rows)
        st.run.write_tensors(
            rel,
            {
                "x": torch.from_numpy(x),
                "y": torch.from_numpy(rows.labels.astype(np.int64)),
                "presence": torch.from_numpy(rows.presence),
            },
        )
    cached = st.run.read_tensors(rel)
    experts = [build_expert(st.cfg, k) for _ in st.sites]
    system = FusedSystem(experts, _head(payload.meta))
    system.load_state_dict(payload.prefixed("system"))
    fusion = replace(
        st.cfg.fusion,
        finetune_epochs=int(payload.meta["epochs"]),
        finetune_lr=float(payload.meta["lr_experts"]),
        lr=float(payload.meta["lr_head"]),
    )
    y = cached["y"].numpy()
    curve = finetune_fusion(
        system,
        cached["x"].numpy(),
        y,
        cached["presence"].numpy(),
        cfg=fusion,
        num_classes=k,
        seed=_round_seed(st, payload.meta, setup.site),
        batch_size=st.cfg.training.batch_size,
        class_weight=payload.tensors["class_weight"].float(),
        schedule=False,
    )
    state = {key: v.detach().clone() for key, v in system.state_dict().items()}
    return Payload(meta={"site": setup.site, "examples": len(y), "loss": curve[-1]}, tensors=state)


def _fedavg_round(setup: SiteSetup, payload: Payload) -> Payload:
    rel = "federation/fedavg_inputs.safetensors"
    st = _state(setup, payload.meta, images=False)
    if not st.run.has(rel):  # the first round: the site's normalized images, cached at the site
        st = _state(setup, payload.meta)
    k = len(st.data.manifest.classes)
    model = build_expert(st.cfg, k)
    model.load_state_dict(payload.prefixed("network"))
    if not st.run.has(rel):
        bank = fit_normalizers(st.cfg, st.run, st.data)
        rows = st.data.rows("train")
        x = normalize_rows(bank, st.data, rows)
        st.run.write_tensors(
            rel, {"x": torch.from_numpy(x), "y": torch.from_numpy(st.data.labels[rows])}
        )
    cached = st.run.read_tensors(rel)
    update = local_network_update(
        model,
        cached["x"].numpy(),
        cached["y"].numpy(),
        cfg=st.cfg.training,
        num_classes=k,
        epochs=int(payload.meta["epochs"]),
        lr=float(payload.meta["lr"]),
        seed=_round_seed(st, payload.meta, setup.site),
        mu=float(payload.meta.get("mu", 0.0)),
    )
    return Payload(
        meta={"site": setup.site, "examples": update.examples, "loss": update.loss},
        tensors=update.state,
    )


def _evaluate(setup: SiteSetup, payload: Payload) -> Payload:
    st = _state(setup, payload.meta)
    final = RunDir(st.run.root / "federation" / "final")
    for rel, content in sorted(payload.files.items()):
        if rel.startswith(("/", "..")) or ".." in Path(rel).parts:
            raise SiteFusionError(f"coordinator message: file name {rel!r} leaves the run folder")
        final.write_bytes(rel, content)
    final.set_info(**dict(payload.meta.get("info", {})))
    loaded = LoadedRun(final.root)
    test_ids = [r.id for r in st.data.manifest.records if st.data.splits[r.id] == "test"]
    if not test_ids:
        return Payload(meta={"site": setup.site, "methods": [], "groups": []})
    pset, _ = predict_manifest(loaded, st.data.manifest.subset(test_ids))
    # Group codes drawn afresh for this reply: the coordinator can tell which predictions share
    # a lesion or patient (the bootstrap needs that), not which lesion or patient it is.
    unique = sorted(set(pset.group.tolist()))
    codes = [f"{setup.site}-{i:05d}" for i in range(len(unique))]
    order = list(range(len(unique)))
    secrets.SystemRandom().shuffle(order)
    code_of = {g: codes[order[i]] for i, g in enumerate(unique)}
    tensors = {"labels": torch.from_numpy(pset.labels.astype(np.int64))}
    for name, probs in pset.probs.items():
        tensors[f"probs.{name}"] = torch.from_numpy(np.asarray(probs, dtype=np.float32))
    for name, weights in pset.attention.items():
        tensors[f"attention.{name}"] = torch.from_numpy(np.asarray(weights, dtype=np.float32))
    return Payload(
        meta={
            "site": setup.site,
            "methods": list(pset.probs),
            "groups": [code_of[g] for g in pset.group.tolist()],
        },
        tensors=tensors,
    )


_HANDLERS = {
    "groups": _groups,
    "home_splits": _home_splits,
    "prepare": _prepare,
    "expert": _expert,
    "head_setup": _head_setup,
    "head_round": _head_round,
    "finetune_round": _finetune_round,
    "fedavg_round": _fedavg_round,
    "ood_threshold": _ood_threshold,
    "evaluate": _evaluate,
}


def handle(setup: SiteSetup, payload: Payload) -> Payload:
    """Run the phase ``payload.meta["phase"]`` at this site and return its reply.

    Raises:
        ConfigError: an unknown phase or a malformed message.
        SiteFusionError: the site's own data or work folder has a problem (the message names it).
    """
    phase = payload.meta.get("phase")
    if phase == "hello":
        return Payload(meta={"site": setup.site})
    handler = _HANDLERS.get(str(phase))
    if handler is None:
        raise ConfigError(
            f"coordinator message: unknown phase {phase!r}; valid: {', '.join(PHASES)}"
        )
    reply = handler(setup, payload)
    reply.meta["phase"] = phase
    return reply
