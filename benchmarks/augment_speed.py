"""What augmentation costs per training step: MONAI's per-image array transforms against the
batched augmentation sitefusion trains with, next to the step it feeds.

For batches of 64 RGB images at 64 and 96 px (2 torch threads) it times:

- the per-image MONAI pipeline sitefusion used until issue 32 (``RandFlip`` per axis,
  ``RandRotate90``, ``RandZoom``, ``RandScaleIntensity``, ``RandShiftIntensity``,
  ``RandGaussianNoise``, composed and applied image by image), kept here as the reference;
- :class:`sitefusion.training.augment.BatchAugmenter` on the whole batch;
- one training step (forward, backward, AdamW) of a whole EfficientNet-Lite0 expert on the same
  batch, channels-last, as :class:`~sitefusion.experts.SiteExpert` runs it.

Run on an idle machine (``uptime`` below 0.5): ``.venv/bin/python benchmarks/augment_speed.py``.
Prints a Markdown table with the 1-minute load average before and after.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandFlip,
    RandGaussianNoise,
    RandRotate90,
    RandScaleIntensity,
    RandShiftIntensity,
    RandZoom,
)
from torch import nn

from sitefusion.experts import SiteExpert
from sitefusion.training.augment import BatchAugmenter

BATCH = 64


def per_image_monai(seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The per-image pipeline of sitefusion before issue 32."""
    transform = Compose(
        [
            RandFlip(prob=0.5, spatial_axis=0),
            RandFlip(prob=0.5, spatial_axis=1),
            RandRotate90(prob=0.5, max_k=3, spatial_axes=(0, 1)),
            RandZoom(prob=0.3, min_zoom=0.9, max_zoom=1.15, keep_size=True, padding_mode="edge"),
            RandScaleIntensity(prob=0.5, factors=0.1),
            RandShiftIntensity(prob=0.5, offsets=0.1),
            RandGaussianNoise(prob=0.2, std=0.03),
        ]
    )
    transform.set_random_state(seed=seed)

    def apply(batch: np.ndarray) -> np.ndarray:
        out = np.empty_like(batch)
        for i in range(len(batch)):
            out[i] = np.asarray(transform(batch[i]), dtype=np.float32)
        return out

    return apply


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    rows = []
    for px in (64, 96):
        x = np.random.default_rng(0).normal(size=(BATCH, 3, px, px)).astype(np.float32)
        monai_aug = per_image_monai(0)
        batch_aug = BatchAugmenter(2, seed=0)
        t_monai = median_seconds(lambda a=monai_aug, x=x: a(x), 10)
        t_batch = median_seconds(lambda a=batch_aug, x=x: a(x), 10)
        torch.manual_seed(0)
        model = SiteExpert("efficientnet-lite0", 2, 3, 64, 7)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        y = torch.randint(0, 7, (BATCH,))
        xt = torch.from_numpy(x)

        def step(
            model: nn.Module = model,
            opt: torch.optim.Optimizer = opt,
            xt: torch.Tensor = xt,
            y: torch.Tensor = y,
        ) -> None:
            model.train()
            loss = nn.functional.cross_entropy(model(xt), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        t_step = median_seconds(step, 5)
        rows.append((px, t_monai, t_batch, t_step))
    load_after = os.getloadavg()[0]
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after\n")
    print(
        "| size | MONAI per image | batched | Lite0 training step | per-image share of a step "
        "| batched share |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for px, t_monai, t_batch, t_step in rows:
        print(
            f"| {px} px | {t_monai * 1000:.1f} ms | {t_batch * 1000:.1f} ms | "
            f"{t_step * 1000:.0f} ms | {t_monai / t_step:.0%} | {t_batch / t_step:.0%} |"
        )


if __name__ == "__main__":
    main()
