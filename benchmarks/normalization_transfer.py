"""How well does each site's expert transfer to the other sites under a normalization setting?

Fits a run's normalizers and site experts only (the first stages of ``sitefusion train``; an
existing run directory is reused as is), then prints the balanced accuracy of every expert's own
head on every *other* site's images, normalized the way the product normalizes them (each image
with its own site's normalizer). Only non-test rows are used (train, val and fusion splits of the
target site: the source expert never saw them), so the figures can be used to choose a
normalization. The own-site figure is on the site's fusion split. With ``--pooled`` the other
sites' images go through the pooled normalizer instead (what pooled training sees).

With ``--site-bn`` it also prints the matrix with each expert's BatchNorm statistics
re-estimated on the *target* site's unlabelled train and val images (feature-level site
normalization, as in SiloBN / FedBN-style local statistics), scored on the target's fusion
split; the plain matrix beside it is then scored on the same fusion-split images.

Run: ``.venv/bin/python benchmarks/normalization_transfer.py configs/ham10000.yaml OUT_DIR
[--set normalization.kind=zscore] [--pooled]``
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from sitefusion.config import load_config
from sitefusion.experts import SiteExpert, build_expert
from sitefusion.normalization import NormalizerBank
from sitefusion.training.context import RunData, normalize_rows
from sitefusion.training.loop import predict_logits, recompute_batchnorm
from sitefusion.training.stages import fit_normalizers, train_expert
from sitefusion.workflows import prepare_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("out", type=Path, help="run directory (created, or reused if it exists)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument(
        "--pooled",
        action="store_true",
        help="normalize the other sites' images with the pooled normalizer instead of their own",
    )
    ap.add_argument(
        "--site-bn",
        action="store_true",
        help="also score each expert with BatchNorm statistics re-estimated on the target site",
    )
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(cfg.training.threads or 2)
    run, data = prepare_run(cfg, args.out)
    bank = fit_normalizers(cfg, run, data)
    sites = list(data.manifest.sites)
    num_classes = len(data.manifest.classes)
    experts = {}
    for site in sites:
        train_expert(cfg, run, data, bank, site)
        expert = build_expert(cfg, num_classes)
        expert.load_state_dict(run.read_tensors(f"experts/{site}.safetensors"))
        experts[site] = expert.eval()

    variants = ["plain", "site-bn"] if args.site_bn else ["plain"]
    for variant in variants:
        if args.site_bn:
            print(f"\n{variant}: scored on each target's fusion split")
        _matrix(args, data, bank, experts, sites, variant)


def _matrix(
    args: argparse.Namespace,
    data: RunData,
    bank: NormalizerBank,
    experts: dict[str, SiteExpert],
    sites: list[str],
    variant: str,
) -> None:
    """Print one expert x target-site matrix of balanced accuracy."""
    print(f"| expert | {' | '.join(sites)} |")
    print("|---" * (len(sites) + 1) + "|")
    cross: dict[str, list[float]] = {t: [] for t in sites}
    unlabelled: dict[str, np.ndarray] = {}  # target -> its train + val images, normalized once
    for source in sites:
        cells = []
        for target in sites:
            split = ("fusion",) if target == source or args.site_bn else ("train", "val", "fusion")
            rows = data.rows(*split, site=target)
            pooled = args.pooled and target != source
            x = normalize_rows(bank, data, rows, pooled=pooled)
            model = experts[source]
            if variant == "site-bn":
                if target not in unlabelled:
                    rows_tv = data.rows("train", "val", site=target)
                    unlabelled[target] = normalize_rows(bank, data, rows_tv)
                model = copy.deepcopy(model)
                recompute_batchnorm(model, unlabelled[target])
            pred = predict_logits(model, x).argmax(1)
            score = float(balanced_accuracy_score(data.labels[rows], pred))
            if target != source:
                cross[target].append(score)
            cells.append(f"({score:.3f})" if target == source else f"{score:.3f}")
        print(f"| {source} | {' | '.join(cells)} |", flush=True)
    means = [float(np.mean(cross[t])) for t in sites]
    print(f"| mean of other experts | {' | '.join(f'{m:.3f}' for m in means)} |")
    print(f"mean cross-site balanced accuracy: {np.mean([v for t in sites for v in cross[t]]):.3f}")


if __name__ == "__main__":
    main()
