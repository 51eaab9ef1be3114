"""Benchmark: end-to-end batch scoring versus bare forward passes of the same networks.

End to end: ``score_inputs`` over a folder of PNG files (discovery, reading, resizing, site
normalization, every expert once per image, the fusion head, OOD distance, CSV/JSONL rows).
Bare: the same experts and fusion head on the same images already normalized and stacked in
memory, batched under ``torch.inference_mode``. The ratio of throughputs is what the scorer
keeps of the raw compute.

Run: ``.venv/bin/python benchmarks/bench_scoring.py RUN_DIR [--n 512]`` (a 2D run, for example
``runs/demo`` from ``make demo``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sitefusion.methods import LoadedRun
from sitefusion.scoring import score_inputs


def main() -> None:
    """Time both paths and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = LoadedRun(args.run)
    c, size = loaded.channels, loaded.spatial_size
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i in range(args.n):
            arr = rng.integers(0, 255, size=(*size, c), dtype=np.uint8)
            Image.fromarray(arr.squeeze(-1) if c == 1 else arr).save(folder / f"img_{i:05d}.png")
        t0 = time.perf_counter()
        summary = score_inputs(args.run, [folder], Path(tmp) / "out")
        t_end = time.perf_counter() - t0

    method = summary.method
    fusion = loaded.fusion(method)
    head = fusion.head
    experts = fusion.networks or loaded.experts
    x = rng.normal(size=(args.n, c, *size)).astype(np.float32)
    batch = 64
    with torch.inference_mode():
        t0 = time.perf_counter()
        for i in range(0, args.n, batch):
            xb = torch.from_numpy(x[i : i + batch])
            zs = [e.embed(xb) for e in experts]
            feats = torch.stack(zs, 1)
            logits = torch.stack([e.head(z) for e, z in zip(experts, zs, strict=True)], 1)
            head(feats, logits)
        t_bare = time.perf_counter() - t0
    print(
        f"run {args.run} ({method}, {len(experts)} experts, {c}x{'x'.join(map(str, size))}), "
        f"{args.n} images, threads {args.threads}\n"
    )
    print("| path | seconds | images/s |")
    print("| --- | ---: | ---: |")
    print(
        f"| sitefusion score, end to end ({summary.ok} ok) | {t_end:.2f} | {args.n / t_end:.0f} |"
    )
    print(f"| bare forward passes, pre-loaded tensors | {t_bare:.2f} | {args.n / t_bare:.0f} |")
    print(f"\nratio end-to-end / bare throughput: {t_bare / t_end:.2f}")


if __name__ == "__main__":
    main()
