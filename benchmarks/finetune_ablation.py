"""How much do the trained site experts contribute once the fusion is fine-tuned end to end?

Refits the product fusion and the ``random_features`` control of a finished run, from its
cached features and expert weights, under one fine-tuning setting, and prints balanced accuracy on

* a held-out share of the fusion split's groups (``--holdout``, the validation signal used to
  choose settings; neither system trains on it), and
* the run's internal test split (reported for context, not for choosing).

With ``--soup K`` it fine-tunes K copies from the same start (seeds ``seed .. seed+K-1``) and
prints each member, their weight average ("soup", as stored averaged and with BatchNorm
statistics recomputed: what ``fusion.finetune_soup`` keeps) and the mean of their probabilities
(an ensemble, for comparison); ``--dump`` then holds the logits of each member (``fusion[0]``
...), of ``fusion soup+bn`` and of ``fusion ensemble``.

Both systems get exactly the same procedure; only their starting experts differ (the trained
site experts vs. the shared untrained initial weights), so ``fusion - random_features`` is what
the trained experts contribute under that setting. Nothing is written to the run directory.

Run: ``.venv/bin/python benchmarks/finetune_ablation.py runs/ham --epochs 8 --seed 0``
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from sitefusion.config import load_config, replace
from sitefusion.experts import average_state_dicts, build_expert
from sitefusion.fusion import FusedSystem
from sitefusion.methods import LoadedRun
from sitefusion.training.context import calibration_holdout, head_rows, normalize_rows
from sitefusion.training.features import load_feature_cache
from sitefusion.training.finetune import finetune_fusion
from sitefusion.training.fusion_head import fit_fusion
from sitefusion.training.loop import recompute_batchnorm
from sitefusion.training.stages import cache_features, fit_normalizers, load_experts
from sitefusion.workflows import prepare_run


def _logits(system: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Fused logits of ``x``."""
    out = []
    system.eval()
    with torch.inference_mode():
        for i in range(0, len(x), 256):
            out.append(system(torch.from_numpy(x[i : i + 256])).logits.numpy())
    return np.concatenate(out)


def _predict(system: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return _logits(system, x).argmax(1)


def _site_bacc(y: np.ndarray, p: np.ndarray, s: np.ndarray, sites: list[str]) -> list[float]:
    return [
        float(balanced_accuracy_score(y[s == k], p[s == k])) if (s == k).any() else float("nan")
        for k in sites
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs (0: head only)")
    ap.add_argument("--lr", type=float, default=None, help="experts' fine-tuning LR")
    ap.add_argument("--freeze", default="", help="comma-separated parameter-name prefixes")
    ap.add_argument("--rows", choices=["all", "fusion"], default="all")
    ap.add_argument("--holdout", type=float, default=0.3, help="share of fusion-split groups")
    ap.add_argument(
        "--fold",
        default=None,
        metavar="K/N",
        help="hold out fold K of N of the fusion split's groups instead of --holdout (run "
        "K = 0..N-1 with --dump and combine the dumps with benchmarks/cv_compare.py)",
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the head fit and fine-tuning")
    ap.add_argument("--methods", default="fusion,random_features", help="which of the two to refit")
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="for a run whose experts are trained but which is not finished (e.g. one made by "
        "normalization_transfer.py): its config; the trained-feature cache is computed into the "
        "run directory if missing (fusion only)",
    )
    ap.add_argument(
        "--expert-dropout",
        type=float,
        default=None,
        help="fusion.expert_dropout for the head and the fine-tuning (default: the run's)",
    )
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="with --config")
    ap.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="write each system's holdout logits, labels and sites, and the training rows' "
        "labels and sites, to this JSON file (for post-hoc decision rules)",
    )
    ap.add_argument(
        "--soup",
        type=int,
        default=1,
        help="fine-tune this many copies (seeds seed..seed+K-1, same start) and average weights",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)

    if args.config is not None:
        base = load_config(args.config, args.overrides)
        run, data = prepare_run(base, Path(args.run))
        bank = fit_normalizers(base, run, data)  # the run's own: read back, not refitted
        experts = load_experts(base, run, data.manifest.sites, len(data.manifest.classes))
        cache_features(base, run, data, bank, "features/trained.safetensors", experts)
        loaded: Any = SimpleNamespace(cfg=base, root=Path(args.run), bank=bank)
    else:
        loaded = LoadedRun(args.run)
        run, data = prepare_run(loaded.cfg, loaded.root)
    fusion_cfg = replace(
        loaded.cfg.fusion,
        finetune_epochs=args.epochs,
        finetune_lr=args.lr or loaded.cfg.fusion.finetune_lr,
        calibration_fraction=args.holdout,
        expert_dropout=(
            loaded.cfg.fusion.expert_dropout if args.expert_dropout is None else args.expert_dropout
        ),
    )
    cfg = replace(loaded.cfg, fusion=fusion_cfg)
    num_classes = len(data.manifest.classes)
    sites = list(data.manifest.sites)
    caches = {
        name: load_feature_cache(run, f"features/{kind}.safetensors")
        for name, kind in (("fusion", "trained"), ("random_features", "random"))
        if name in args.methods.split(",") or name == "fusion"
    }
    feats = caches["fusion"]
    rows = head_rows(cfg, data, feats)
    if args.fold is None:
        hold = calibration_holdout(cfg, rows, data, feats)  # seeded by the run's seed: fixed
    else:
        hold = _fold_rows(args.fold, cfg.seed, rows.groups, data, feats.ids, rows.positions)
    keep = ~hold
    if args.rows == "fusion":
        keep &= np.array([data.splits[feats.ids[j]] == "fusion" for j in rows.positions])
    pos = {rid: i for i, rid in enumerate(data.ids)}
    drows = np.array([pos[feats.ids[j]] for j in rows.positions])
    x_train = normalize_rows(loaded.bank, data, drows[keep])
    x_hold = normalize_rows(loaded.bank, data, drows[hold])
    y_hold, s_hold = rows.labels[hold], data.sites[drows[hold]]
    test = data.rows("test")
    x_test = normalize_rows(loaded.bank, data, test)
    y_test, s_test = data.labels[test], data.sites[test]

    setting = (
        f"epochs={args.epochs} lr={fusion_cfg.finetune_lr} "
        f"freeze={args.freeze or '-'} rows={args.rows} seed={args.seed} "
        f"expert_dropout={fusion_cfg.expert_dropout} fold={args.fold or '-'}"
    )
    on = _Scored(x_hold, y_hold, s_hold, x_test, y_test, s_test, sites)
    print(f"{setting}; holdout {int(hold.sum())} images, training rows {int(keep.sum())}")
    dumped: dict[str, list[list[float]]] = {}
    for name, cache in caches.items():
        if name not in args.methods.split(","):
            continue
        t0 = time.perf_counter()
        f, lg = cache.features[rows.positions], cache.logits[rows.positions]
        head, _ = fit_fusion(
            fusion_cfg.modes[0],
            f[keep],
            lg[keep],
            rows.labels[keep],
            cfg=fusion_cfg,
            num_classes=num_classes,
            seed=args.seed,
            presence=rows.presence[keep],
            expert_dropout=fusion_cfg.expert_dropout,
        )
        experts = []
        for site in sites:
            expert = build_expert(cfg, num_classes)
            rel = "experts/init.safetensors" if name != "fusion" else f"experts/{site}.safetensors"
            expert.load_state_dict(run.read_tensors(rel))
            for pname, p in expert.named_parameters():
                if args.freeze and any(pname.startswith(q) for q in args.freeze.split(",")):
                    p.requires_grad_(False)
            experts.append(expert)
        start = FusedSystem(experts, head)
        members = []
        for m in range(args.soup):
            system = copy.deepcopy(start)
            if args.epochs > 0:
                finetune_fusion(
                    system,
                    x_train,
                    rows.labels[keep],
                    rows.presence[keep],
                    cfg=fusion_cfg,
                    num_classes=num_classes,
                    seed=args.seed + m,
                    batch_size=cfg.training.batch_size,
                )
            members.append(system)
        if args.soup > 1:
            for m, member in enumerate(members):
                _report(f"{name}[{m}]", member, on)
                dumped[f"{name}[{m}]"] = _logits(member, x_hold).round(5).tolist()
            system = copy.deepcopy(start)
            system.load_state_dict(average_state_dicts([mm.state_dict() for mm in members]))
            _report(f"{name} soup", system, on)
            recompute_batchnorm(system, x_train)
            _report(f"{name} soup+bn", system, on)
            ensemble = _Ensemble(members)
            _report(f"{name} ensemble", ensemble, on, t0)
            # cv_compare.py --method "fusion soup+bn" / "fusion ensemble" / "fusion[0]"
            dumped[f"{name} soup+bn"] = _logits(system, x_hold).round(5).tolist()
            dumped[f"{name} ensemble"] = _logits(ensemble, x_hold).round(5).tolist()
            continue
        _report(name, system, on, t0)
        dumped[name] = _logits(system, x_hold).round(5).tolist()
    if args.dump is not None:
        payload = {
            "setting": setting,
            "classes": list(data.manifest.classes),
            "sites": sites,
            "holdout": {
                "labels": y_hold.tolist(),
                "sites": s_hold.tolist(),
                "logits": dumped,
                # groups as codes (their rank among the run's groups), never the ids themselves
                "groups": np.searchsorted(np.unique(rows.groups), rows.groups[hold]).tolist(),
            },
            "training": {
                "labels": rows.labels[keep].tolist(),
                "sites": data.sites[drows[keep]].tolist(),
            },
        }
        args.dump.write_text(json.dumps(payload))


def _fold_rows(
    spec: str, seed: int, groups: np.ndarray, data: Any, ids: Any, positions: np.ndarray
) -> np.ndarray:
    """``[M]`` bool: the fusion-split rows whose group falls in fold ``K`` of ``N`` (``"K/N"``).

    The fusion split's groups are shuffled once (seeded by the run's seed) and cut into ``N``
    near-equal folds, so the folds of one run never overlap and together cover the split.
    """
    try:
        k, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise SystemExit(f"--fold: expected K/N such as 0/3, got {spec!r}") from None
    if not 0 <= k < n or n < 2:
        raise SystemExit(f"--fold: need 0 <= K < N and N >= 2, got {spec!r}")
    fusion = np.array([data.splits[ids[j]] == "fusion" for j in positions])
    names = np.array(sorted(set(groups[fusion].tolist())), dtype=object)
    order = np.random.default_rng([seed, 4243]).permutation(len(names))
    chosen = set(np.array_split(names[order], n)[k].tolist())
    return fusion & np.array([g in chosen for g in groups])


class _Ensemble(torch.nn.Module):
    """Mean of the members' softmax, returned as log-probabilities in ``.logits``."""

    def __init__(self, members: list[FusedSystem]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        probs = torch.stack([m(x).logits.softmax(1) for m in self.members]).mean(0)
        return SimpleNamespace(logits=probs.log())


@dataclasses.dataclass(frozen=True)
class _Scored:
    """The images every variant is scored on: the holdout (for choosing) and the test split."""

    x_hold: np.ndarray
    y_hold: np.ndarray
    s_hold: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    s_test: np.ndarray
    sites: list[str]


def _report(name: str, system: torch.nn.Module, on: _Scored, t0: float | None = None) -> None:
    p_hold, p_test = _predict(system, on.x_hold), _predict(system, on.x_test)
    _print_scores(name, p_hold, p_test, on, t0)


def _print_scores(
    name: str, p_hold: np.ndarray, p_test: np.ndarray, on: _Scored, t0: float | None = None
) -> None:
    y_hold, s_hold, y_test, s_test, sites = on.y_hold, on.s_hold, on.y_test, on.s_test, on.sites
    hs, ts = (
        _site_bacc(y_hold, p_hold, s_hold, sites),
        _site_bacc(y_test, p_test, s_test, sites),
    )
    print(
        f"  {name:16s} holdout: all {balanced_accuracy_score(y_hold, p_hold):.3f}"
        f" | test: all {balanced_accuracy_score(y_test, p_test):.3f}"
        f" mean-over-sites {np.mean(ts):.3f} [{' '.join(f'{v:.3f}' for v in ts)}]"
        f" | holdout per site [{' '.join(f'{v:.2f}' for v in hs)}]"
        + (f" | {time.perf_counter() - t0:.0f} s" if t0 is not None else ""),
        flush=True,
    )


if __name__ == "__main__":
    main()
