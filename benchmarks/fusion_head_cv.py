"""Model selection for the fusion head without touching any test image.

Refits the fusion head of a finished run on its own training rows (cached features; fusion split
plus, with cross-fitting, masked expert-training rows) under 5-fold group cross-validation and
prints the out-of-fold balanced accuracy per site for a few head settings. Only the cached
features of non-test images are read.

Run: ``.venv/bin/python benchmarks/fusion_head_cv.py runs/ham [--set fusion.epochs=30 ...]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold

from sitefusion.config import parse_overrides, replace
from sitefusion.data import load_split_table
from sitefusion.methods import LoadedRun
from sitefusion.training.fusion_head import fit_fusion
from sitefusion.workflows.evaluate import head_training_rows


def oof_scores(
    loaded: LoadedRun, fusion_cfg: object, mode: str, cross_fit: bool
) -> dict[str, float]:
    """Out-of-fold balanced accuracy per site of one head setting."""
    feats, y, sites, presence = head_training_rows(loaded)
    if not cross_fit:
        keep = presence.all(1)
        feats, y, sites = feats.subset(np.flatnonzero(keep)), y[keep], sites[keep]
        presence = presence[keep]
    group_of = {
        i: row["group"] for i, row in load_split_table(loaded.run.verify("splits.csv")).items()
    }
    groups = np.array([group_of[i] for i in feats.ids])
    pred = np.zeros(len(y), dtype=np.int64)
    for k, (tr, te) in enumerate(GroupKFold(n_splits=5).split(y, y, groups)):
        head, _ = fit_fusion(
            mode,
            feats.features[tr],
            feats.logits[tr],
            y[tr],
            cfg=fusion_cfg,  # type: ignore[arg-type]
            num_classes=len(loaded.classes),
            seed=k,
            presence=presence[tr],
            expert_dropout=fusion_cfg.expert_dropout,  # type: ignore[attr-defined]
        )
        with torch.inference_mode():
            out = head(
                torch.from_numpy(feats.features[te]),
                torch.from_numpy(feats.logits[te]),
            )
        pred[te] = out.logits.argmax(1).numpy()
    # Score only fusion-split rows (all experts present), as at test time.
    full = presence.all(1)
    scores = {
        s: float(balanced_accuracy_score(y[full & (sites == s)], pred[full & (sites == s)]))
        for s in loaded.expert_sites
    }
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def main() -> None:
    """Print out-of-fold per-site balanced accuracy for the run's head and some variants."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    loaded = LoadedRun(args.run)
    base = loaded.cfg.fusion
    variants: dict[str, dict[str, object]] = {"run's head": {}}
    for item in args.overrides:
        variants[item] = parse_overrides([item]).get("fusion", {})
    print("| variant | " + " | ".join([*loaded.expert_sites, "mean"]) + " |")
    print("|---" * (len(loaded.expert_sites) + 2) + "|")
    for name, change in variants.items():
        cfg = replace(base, **change)  # validated: CLI values
        for cross_fit in sorted({base.cross_fit, cfg.cross_fit}):
            s = oof_scores(loaded, cfg, cfg.modes[0], cross_fit)
            label = f"{name} (cross_fit={cross_fit})"
            print(
                f"| {label} | "
                + " | ".join(f"{s[k]:.3f}" for k in [*loaded.expert_sites, "mean"])
                + " |"
            )


if __name__ == "__main__":
    main()
