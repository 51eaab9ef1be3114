"""Would a per-site decision rule, fitted on cross-fitted fusion-split predictions, help?

Per-site balanced accuracy turns on where each site's decision boundaries fall as much as on the
features (out of fold, a soup and the ensemble of its members differ by 0.055 with the ensemble
ranking better). This asks whether offsets added to the fusion's logits per site,
fitted to maximise that site's balanced accuracy, carry to images they were not fitted on.

Nested over the folds that ``finetune_ablation.py --fold K/N --dump`` wrote: for fold K, each
site's offsets are fitted on the *other* folds' out-of-fold logits (other fine-tuned models, as
a product would fit them on fold models and apply them to its final model) and applied to fold
K. The adjusted folds are written as dumps, to be compared with ``cv_compare.py``. Rules:

* ``prior``: one strength per site on ``log p_site - log p_all`` (the shape of
  ``fusion.site_prior``), chosen from a grid;
* ``free``: one offset per class per site by coordinate ascent on a grid, then multiplied by
  ``--shrink``.

No test image is read. Run::

    .venv/bin/python benchmarks/decision_offsets.py /tmp/cv/soup_f{0,1,2}.json \\
        --method "fusion soup+bn" --rule prior --out /tmp/cv/offsets_prior
    .venv/bin/python benchmarks/cv_compare.py --a /tmp/cv/soup_f{0,1,2}.json \\
        --b /tmp/cv/offsets_prior_f{0,1,2}.json --method "fusion soup+bn"
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from sitefusion.fusion.site_prior import floored_frequencies


def _score(y: np.ndarray, z: np.ndarray, b: np.ndarray) -> float:
    return float(balanced_accuracy_score(y, (z + b).argmax(1)))


def fit_prior(y: np.ndarray, z: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``t * shift`` with the strength ``t`` of the grid that scores best (ties: smallest |t|)."""
    grid = sorted(np.linspace(-1.0, 1.5, 11), key=abs)
    best = max(grid, key=lambda t: (_score(y, z, t * shift), -abs(t)))
    return best * shift


def fit_free(y: np.ndarray, z: np.ndarray, rounds: int = 3) -> np.ndarray:
    """One offset per class, by coordinate ascent over a grid (kept only where it gains)."""
    b = np.zeros(z.shape[1])
    for _ in range(rounds):
        for c in range(len(b)):
            current = _score(y, z, b)
            for d in np.linspace(-2.0, 2.0, 17):
                trial = b.copy()
                trial[c] = d
                if (v := _score(y, z, trial)) > current + 1e-9:
                    current, b = v, trial
    return b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="+", type=Path, help="the N fold dumps of one setting")
    ap.add_argument("--method", default="fusion soup+bn")
    ap.add_argument("--rule", choices=("prior", "free"), default="prior")
    ap.add_argument("--shrink", type=float, default=1.0, help="free rule: scale of the offsets")
    ap.add_argument("--floor", type=float, default=0.01, help="prior rule: frequency floor")
    ap.add_argument("--out", type=Path, required=True, help="prefix; writes PREFIX_fK.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
    folds: list[dict[str, Any]] = [json.loads(p.read_text()) for p in args.dumps]

    def holdout(d: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = d["holdout"]
        if args.method not in h["logits"]:
            raise SystemExit(f"a dump has no logits for method {args.method!r}")
        return (
            np.asarray(h["labels"]),
            np.asarray(h["sites"]),
            # Offsets on the logits: a per-row constant (the log-softmax) changes no decision.
            np.asarray(h["logits"][args.method]),
        )

    for k, fold in enumerate(folds):
        _, s, z = holdout(fold)
        adjusted = z.copy()
        ty, ts = np.asarray(fold["training"]["labels"]), np.asarray(fold["training"]["sites"])
        n_classes = z.shape[1]
        p_all = floored_frequencies(np.bincount(ty, minlength=n_classes), args.floor)
        others = [holdout(d) for j, d in enumerate(folds) if j != k]
        for site in fold["sites"]:
            fy = np.concatenate([oy[os == site] for oy, os, _ in others])
            fz = np.concatenate([oz[os == site] for _, os, oz in others])
            if not len(fy):
                continue
            if args.rule == "prior":
                p_site = floored_frequencies(
                    np.bincount(ty[ts == site], minlength=n_classes), args.floor
                )
                b = fit_prior(fy, fz, np.log(p_site) - np.log(p_all))
            else:
                b = args.shrink * fit_free(fy, fz)
            adjusted[s == site] += b
            print(f"fold {k} {site}: offsets {np.round(b, 2).tolist()}")
        out = json.loads(json.dumps(fold))
        out["setting"] = f"{fold['setting']} + {args.rule} offsets from the other folds"
        out["holdout"]["logits"] = {args.method: adjusted.round(5).tolist()}
        Path(f"{args.out}_f{k}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
