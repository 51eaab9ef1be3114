"""Compare two fine-tuning settings on the whole fusion split, fold by fold, per site.

``finetune_ablation.py --fold K/N --dump F.json`` fine-tunes on everything but fold K of the
fusion split's groups and dumps the fold's logits. Run it for K = 0..N-1 under two settings and
give the dumps here: the folds are stacked into out-of-fold predictions for every fusion-split
image (about three times the single 30% holdout), and each site's balanced accuracy is printed
for both settings with the paired difference ``B - A`` and its 95% group-bootstrap interval
(groups resampled within each site; the mean over sites uses the same resamples), then each
site's macro one-vs-rest AUC for both, which does not depend on the decision rule. No test image
is read. A setting is worth adopting when the interval of the mean over sites clears 0.

Run::

    .venv/bin/python benchmarks/cv_compare.py --a a0.json a1.json a2.json \\
        --b b0.json b1.json b2.json [--method fusion] [--method-b NAME] [--boot 1000]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from sitefusion.evaluation.bootstrap import group_bootstrap_weights, percentile_ci
from sitefusion.evaluation.harness import site_seed
from sitefusion.evaluation.metrics import macro_auc
from sitefusion.evaluation.weighted import batched_balanced_accuracy
from sitefusion.methods import softmax_rows as softmax


def _stack(paths: list[Path], method: str) -> dict[str, np.ndarray]:
    """Concatenate the folds of one setting; refuses overlapping or inconsistent dumps."""
    parts = [json.loads(p.read_text()) for p in paths]
    for p, d in zip(paths, parts, strict=True):
        if method not in d["holdout"]["logits"]:
            raise SystemExit(f"{p}: no logits for method {method!r}")
        if "groups" not in d["holdout"]:
            raise SystemExit(f"{p}: no holdout groups (dumped by an older finetune_ablation.py)")
    out = {
        key: np.concatenate([np.asarray(d["holdout"][key]) for d in parts])
        for key in ("labels", "sites", "groups")
    }
    out["logits"] = np.concatenate([np.asarray(d["holdout"]["logits"][method]) for d in parts])
    if len(np.unique(out["groups"])) != sum(len(np.unique(d["holdout"]["groups"])) for d in parts):
        raise SystemExit(f"the dumps {[str(p) for p in paths]} share groups: not disjoint folds")
    out["sites_order"] = np.asarray(parts[0]["sites"])
    return out


def _onehot(pred: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[pred]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", type=Path, required=True, help="fold dumps of setting A")
    ap.add_argument("--b", nargs="+", type=Path, required=True, help="fold dumps of setting B")
    ap.add_argument("--method", default="fusion", help="the method read from the A dumps")
    ap.add_argument(
        "--method-b",
        default=None,
        help="the method read from the B dumps (default: --method); with the same dumps for "
        "--a and --b this compares two methods of one setting, e.g. a soup against an ensemble",
    )
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    # A site's fold lacks some classes a model predicts; its balanced accuracy is over the
    # classes present, as intended, so scikit-learn's warning about it is only noise here.
    warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
    a, b = _stack(args.a, args.method), _stack(args.b, args.method_b or args.method)
    # Same rows in the same order (same run, same folds), or the pairing is meaningless.
    ia = np.lexsort((a["labels"], a["groups"]))
    ib = np.lexsort((b["labels"], b["groups"]))
    for key in ("labels", "sites", "groups"):
        if not np.array_equal(a[key][ia], b[key][ib]):
            raise SystemExit(f"settings A and B were not scored on the same images ({key} differ)")
    y, s, g = a["labels"][ia], a["sites"][ia], a["groups"][ia]
    k = a["logits"].shape[1]
    pa, pb = _onehot(a["logits"][ia].argmax(1), k), _onehot(b["logits"][ib].argmax(1), k)
    print(f"{len(y)} out-of-fold images, {len(args.a)} folds; balanced accuracy, B - A [95% CI]")
    print("| site | n | A | B | B - A |")
    print("|---|---:|---:|---:|---:|")
    diffs, va, vb = [], [], []
    for i, site in enumerate(a["sites_order"].tolist()):
        here = s == site
        if not here.any():
            continue
        w = group_bootstrap_weights(g[here], args.boot, site_seed(args.seed, i))
        da = batched_balanced_accuracy(y[here], pa[here], w)
        db = batched_balanced_accuracy(y[here], pb[here], w)
        xa = float(balanced_accuracy_score(y[here], pa[here].argmax(1)))
        xb = float(balanced_accuracy_score(y[here], pb[here].argmax(1)))
        lo, hi, _ = percentile_ci(db - da)
        print(
            f"| {site} | {int(here.sum())} | {xa:.3f} | {xb:.3f} | {xb - xa:+.3f} [{lo:+.3f}, {hi:+.3f}] |"
        )
        diffs.append(db - da)
        va.append(xa)
        vb.append(xb)
    lo, hi, _ = percentile_ci(np.mean(diffs, axis=0))
    ma, mb = float(np.mean(va)), float(np.mean(vb))
    print(
        f"| mean over sites | {len(y)} | {ma:.3f} | {mb:.3f} | {mb - ma:+.3f} [{lo:+.3f}, {hi:+.3f}] |"
    )
    xa = float(balanced_accuracy_score(y, pa.argmax(1)))
    xb = float(balanced_accuracy_score(y, pb.argmax(1)))
    print(f"all images pooled: A {xa:.3f}, B {xb:.3f}")
    # Ranking, apart from the decision rule: macro one-vs-rest AUC (point values).
    qa, qb = softmax(a["logits"][ia]), softmax(b["logits"][ib])
    sites = [site for site in a["sites_order"].tolist() if (s == site).any()]
    auc_a = [macro_auc(y[s == site], qa[s == site]) for site in sites]
    auc_b = [macro_auc(y[s == site], qb[s == site]) for site in sites]
    print(
        "macro AUC per site "
        + ", ".join(
            f"{site} {x:.3f} / {z:.3f}" for site, x, z in zip(sites, auc_a, auc_b, strict=True)
        )
        + f" (A / B); mean over sites A {np.nanmean(auc_a):.3f}, B {np.nanmean(auc_b):.3f}"
    )


if __name__ == "__main__":
    main()
