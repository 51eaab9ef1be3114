"""Which frozen-trunk EfficientNet-Lite0 expert to use on HAM10000: measured on validation and
fusion-split images only (never the test split).

Every design is Lite0 at 96 px with ImageNet weights and 10 epochs (what the 25-minute budget of
``sitefusion train`` allows). For each design, the four site experts are trained exactly as ``sitefusion train`` trains them
(:func:`sitefusion.training.stages.train_expert`, ImageNet weights, the config's optimizer,
epochs and early stopping, frozen trunk cached once) and scored on the **fusion split**, which no
expert trained or early-stopped on: each expert on its own site's fusion-split images (balanced
accuracy over the classes present) and on the other sites' (the cross-site transfer the fusion
has to work with). The training seconds of each expert are recorded too.

Run (about 15 minutes on 2 cores)::

    .venv/bin/python benchmarks/lite0_design.py --out /tmp/lite0_design

Prints a Markdown table; docs/benchmarks.md keeps the result with this command.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from sitefusion.config import load_config
from sitefusion.experts import build_expert
from sitefusion.rundir import RunDir
from sitefusion.training.loop import predict_logits
from sitefusion.training.stages import fit_normalizers, network_inputs, set_threads, train_expert
from sitefusion.workflows import prepare_run

ROOT = Path(__file__).resolve().parents[1]

# Stages 4-6 (frozen_stages 4) train at half the rate of stages 5-6 (docs/benchmarks.md, "Lite0
# speed"): with the pooled model and the fusion on top it cannot fit the 25-minute budget, so it
# is not among the candidates.
DESIGNS: dict[str, list[str]] = {
    "stages 5-6 trained, lr 0.002": ["expert.params.frozen_stages=5"],
    "stages 5-6 trained, lr 0.0005": ["expert.params.frozen_stages=5", "training.lr=0.0005"],
    "stage 6 trained, lr 0.002": ["expert.params.frozen_stages=6"],
}
LITE0 = [
    "expert.backbone=efficientnet-lite0",
    "expert.pretrained=imagenet",
    "data.spatial_size=[96, 96]",
    "training.epochs=10",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for the runs")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ham10000.yaml")
    args = parser.parse_args()
    results = {}
    for name, overrides in DESIGNS.items():
        cfg = load_config(args.config, [*LITE0, *overrides])
        set_threads(cfg)
        out = args.out / name.replace(" ", "_").replace(",", "")
        run, data = prepare_run(cfg, out)
        bank = fit_normalizers(cfg, run, data)
        fusion_rows = data.rows("fusion")
        maps = network_inputs(cfg, run, bank, data, fusion_rows)
        sites = list(data.manifest.sites)
        own, cross, seconds = {}, {}, {}
        for site in sites:
            t0 = time.perf_counter()
            train_expert(cfg, run, data, bank, site)
            seconds[site] = time.perf_counter() - t0
            expert = build_expert(cfg, len(data.manifest.classes))
            expert.load_state_dict(RunDir(out).read_tensors(f"experts/{site}.safetensors"))
            pred = predict_logits(expert.trainable_part(), maps).argmax(1)
            here = data.sites[fusion_rows] == site
            y = data.labels[fusion_rows]
            own[site] = float(balanced_accuracy_score(y[here], pred[here]))
            cross[site] = float(balanced_accuracy_score(y[~here], pred[~here]))
        results[name] = {"own": own, "cross": cross, "seconds": seconds}
        print(json.dumps({name: results[name]}), flush=True)
        run = RunDir(out)
    sites = list(next(iter(results.values()))["own"])
    print(f"| design | {' | '.join(sites)} | mean own | mean cross-site | expert training (s) |")
    print(f"| --- | {' | '.join('---:' for _ in sites)} | ---: | ---: | ---: |")
    for name, r in results.items():
        cells = " | ".join(f"{r['own'][s]:.3f}" for s in sites)
        print(
            f"| {name} | {cells} | {np.mean(list(r['own'].values())):.3f} | "
            f"{np.mean(list(r['cross'].values())):.3f} | {sum(r['seconds'].values()):.0f} |"
        )


if __name__ == "__main__":
    main()
