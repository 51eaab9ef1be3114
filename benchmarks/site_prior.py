"""Does shifting the fusion's logits by each site's case mix raise per-site balanced accuracy?

Applies :func:`sitefusion.fusion.site_prior_offsets` post hoc to the held-out fusion-split logits
that ``finetune_ablation.py --dump`` wrote, for a grid of strengths and floors, and prints balanced
accuracy per site. A positive strength adds that share of ``log p_site - log p_all`` (the site's
prior, what ``fusion.site_prior`` does); a negative one subtracts it, which is the logit
adjustment of Menon et al. (ICLR 2021) if the fusion had already learned each site's case mix.
Nothing here touches the test split.

Run: ``.venv/bin/python benchmarks/site_prior.py DUMP.json [DUMP.json ...]`` (one file per
fine-tuning seed; the table averages them).

With ``--run RUN_DIR`` (a finished run trained *without* ``fusion.site_prior``) it instead
predicts the run's internal test split once and prints per-site balanced accuracy of the fusion
and of pooled training, each without and with the offsets the run would have stored
(``--strengths`` / ``--floors``, first value of each; offsets from all of the fusion's head
rows, the run's calibration holdout included):
context for whether the shift is the fusion's own or would lift any site-agnostic model. That
mode reads test labels and is not for choosing settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from sitefusion.fusion import apply_site_prior, site_prior_offsets


def _home(sites: np.ndarray, names: list[str]) -> np.ndarray:
    return np.stack([sites == n for n in names], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="*", type=Path)
    ap.add_argument("--run", type=Path, default=None, help="test-split context mode, see above")
    ap.add_argument("--strengths", default="-0.5,-0.25,0,0.25,0.5", help="signed, see above")
    ap.add_argument("--floors", default="0.01,0.03,0.1")
    args = ap.parse_args()
    taus = [float(t) for t in args.strengths.split(",")]
    floors = [float(f) for f in args.floors.split(",")]
    if args.run is not None:
        _test_context(args.run, taus[0], floors[0])
        return
    table: dict[tuple[str, float, float], list[list[float]]] = {}
    site_names: list[str] = []
    for path in args.dumps:
        d = json.loads(path.read_text())
        k, site_names = len(d["classes"]), d["sites"]
        y, s = np.array(d["holdout"]["labels"]), np.array(d["holdout"]["sites"])
        ty, ts = np.array(d["training"]["labels"]), np.array(d["training"]["sites"])
        for name, logits in d["holdout"]["logits"].items():
            z = np.asarray(logits)
            for tau in taus:
                for floor in floors:
                    off = site_prior_offsets(ty, ts, site_names, k, strength=abs(tau), floor=floor)
                    zz = apply_site_prior(z, _home(s, site_names), np.sign(tau) * off)
                    pred = zz.argmax(1)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        per = [
                            float(balanced_accuracy_score(y[s == n], pred[s == n]))
                            for n in site_names
                        ]
                    table.setdefault((name, tau, floor), []).append(per)
    print(f"| system | strength | floor | {' | '.join(site_names)} | mean over sites | per dump |")
    print("|---" * (len(site_names) + 5) + "|")
    for (name, tau, floor), rows in table.items():
        v = np.asarray(rows)
        cells = " | ".join(f"{x:.3f}" for x in v.mean(0))
        seeds = " / ".join(f"{x:.3f}" for x in v.mean(1))
        print(f"| {name} | {tau:g} | {floor:g} | {cells} | {v.mean():.3f} | {seeds} |")


def _test_context(root: Path, strength: float, floor: float) -> None:
    import torch

    from sitefusion.inference import LoadedRun
    from sitefusion.training.features import load_feature_cache
    from sitefusion.training.run import head_rows, head_site_prior, prepare_run

    torch.set_num_threads(2)
    loaded = LoadedRun(root)
    if loaded.site_priors:
        raise SystemExit(f"{root}: this run already applies a site prior; give a run without one")
    run, data = prepare_run(loaded.cfg, loaded.root)
    rows = head_rows(loaded.cfg, data, load_feature_cache(run, "features/trained.safetensors"))
    names = list(loaded.expert_sites)
    # The computation training uses, with this strength and floor, over all of the head's rows.
    cfg = dataclasses.replace(
        loaded.cfg,
        fusion=dataclasses.replace(loaded.cfg.fusion, site_prior=strength, site_prior_floor=floor),
    )
    offsets = head_site_prior(cfg, data, rows, np.ones(len(rows.labels), bool))
    if offsets is None:
        raise SystemExit("--strengths: give a positive strength first")
    test = data.rows("test")
    sites = [str(s) for s in data.sites[test]]
    preds = loaded.predict(data.images[test], sites)
    home = loaded.home_mask(sites, preds.norm_policy)
    y, s = data.labels[test], np.asarray(sites)
    print(f"internal test split, strength {strength:g}, floor {floor:g} (context only)")
    print(f"| method | site prior | {' | '.join(names)} | mean over sites |")
    print("|---" * (len(names) + 3) + "|")
    for method in ("fusion", "pooled"):
        logp = np.log(np.clip(preds.probs[method], 1e-12, 1.0))
        for label, z in (("no", logp), ("yes", apply_site_prior(logp, home, offsets))):
            pred = z.argmax(1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                per = [float(balanced_accuracy_score(y[s == n], pred[s == n])) for n in names]
            cells = " | ".join(f"{v:.3f}" for v in per)
            print(f"| {method} | {label} | {cells} | {np.mean(per):.3f} |")


if __name__ == "__main__":
    main()
