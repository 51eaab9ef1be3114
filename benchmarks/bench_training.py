"""Benchmark: what the feature cache saves, and what the expert training loop costs.

1. Fusion training on cached features ``[N, E, D]`` versus recomputing the features with every
   expert at every fusion epoch (what a pipeline without the cache would do).
2. ``fit_classifier`` (augmentation, class weights, validation, per-epoch checkpoint) versus a
   bare torch loop on pre-loaded tensors over the same images, same network, same batch size.

Run: ``.venv/bin/python benchmarks/bench_training.py`` (prints a Markdown table).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sitefusion.config import FusionConfig, TrainingConfig
from sitefusion.experts import SiteExpert
from sitefusion.rundir import RunDir
from sitefusion.training.features import extract_features
from sitefusion.training.fusion_head import fit_fusion
from sitefusion.training.loop import fit_classifier


def main() -> None:
    """Run both comparisons and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1024, help="images")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fusion-epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-augment", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, args.channels, args.size, args.size)).astype(np.float32)
    y = rng.integers(0, 7, size=args.n)
    torch.manual_seed(0)
    experts = [SiteExpert("compact", 2, args.channels, 64, 7) for _ in range(args.experts)]

    # 1. feature cache
    t0 = time.perf_counter()
    feats = extract_features(experts, x, [str(i) for i in range(args.n)])
    t_extract = time.perf_counter() - t0
    fcfg = FusionConfig(epochs=args.fusion_epochs)
    t0 = time.perf_counter()
    fit_fusion(
        "average_attention", feats.features, feats.logits, y, cfg=fcfg, num_classes=7, seed=0
    )
    t_fusion = time.perf_counter() - t0
    recompute = t_fusion + t_extract * args.fusion_epochs

    # 2. training loop vs bare loop
    cfg = TrainingConfig(
        epochs=args.epochs, batch_size=64, patience=100, augment=not args.no_augment
    )
    model = SiteExpert("compact", 2, args.channels, 64, 7)
    n_val = args.n // 8
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fit_classifier(
            model,
            x[n_val:],
            y[n_val:],
            x[:n_val],
            y[:n_val],
            cfg=cfg,
            num_classes=7,
            seed=0,
            run=RunDir(Path(tmp)),
            checkpoint_stem="bench",
        )
        t_loop = time.perf_counter() - t0
    bare = SiteExpert("compact", 2, args.channels, 64, 7)
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x[n_val:]), torch.from_numpy(y[n_val:]).long()
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        bare.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss_fn(bare(xt[idx]), yt[idx]).backward()
            opt.step()
    t_bare = time.perf_counter() - t0
    n_train = args.n - n_val
    print(
        f"images {args.n} ({args.channels}x{args.size}x{args.size}), experts {args.experts}, threads {args.threads}\n"
    )
    print("| measurement | seconds | note |")
    print("| --- | ---: | --- |")
    print(
        f"| feature extraction, all experts, once | {t_extract:.2f} | {args.n * args.experts / t_extract:.0f} image-expert passes/s |"
    )
    print(
        f"| fusion training on cached features ({args.fusion_epochs} epochs) | {t_fusion:.2f} | |"
    )
    print(
        f"| same with features recomputed every epoch (estimated: + extraction x epochs) | {recompute:.1f} | {recompute / t_fusion:.0f}x slower |"
    )
    print(
        f"| fit_classifier, {args.epochs} epochs (augment, weights, val, checkpoints) | {t_loop:.2f} | {n_train * args.epochs / t_loop:.0f} img/s |"
    )
    print(
        f"| bare torch loop, {args.epochs} epochs, pre-loaded tensors | {t_bare:.2f} | {n_train * args.epochs / t_bare:.0f} img/s; overhead {t_loop / t_bare:.2f}x |"
    )


if __name__ == "__main__":
    main()
