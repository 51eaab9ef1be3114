"""Channels-last or not: training and forward images/s of the experts' networks on 2 CPU cores.

:class:`sitefusion.experts.SiteExpert` hands its backbone a channels-last view of every 2-D
batch. This measures why, on batches of 64 RGB images at 64 px, 2 torch threads, for ``compact``
(from scratch) and EfficientNet-Lite0 (ImageNet weights): the backbone called directly on the
default (contiguous, NCHW) batch, against the same batch in channels-last memory order, and,
for completeness, with the weights converted to channels-last as well.

Run on an idle machine (``uptime`` below 0.5): ``.venv/bin/python benchmarks/memory_format.py``.
Prints a Markdown table and the load average before and after.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn

from sitefusion.experts import SiteExpert, initial_weights

BATCH, SIZE, CLASSES = 64, 64, 7


def rates(backbone: str, layout: str) -> tuple[float, float]:
    """(training, forward) images/s with ``layout`` 'default', 'input' or 'input+weights'."""
    torch.manual_seed(0)
    expert = SiteExpert(backbone, 2, 3, 64, CLASSES)
    if backbone == "efficientnet-lite0":
        expert.load_state_dict(initial_weights(expert, "imagenet")[0])
    net = nn.Sequential(expert.backbone, expert.head)  # around SiteExpert's own conversion
    if layout == "input+weights":
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    if layout != "default":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (BATCH,))

    def step() -> None:
        net.train()
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def forward() -> None:
        net.eval()
        with torch.inference_mode():
            net(x)

    out = []
    for fn, repeats in ((step, 8), (forward, 8)):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out.append(BATCH / statistics.median(times))
    return out[0], out[1]


def main() -> None:
    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    rows = [
        (backbone, layout, *rates(backbone, layout))
        for backbone in ("compact", "efficientnet-lite0")
        for layout in ("default", "input", "input+weights")
    ]
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| backbone | channels-last | training img/s | forward img/s |")
    print("| --- | --- | ---: | ---: |")
    for backbone, layout, train, fwd in rows:
        print(f"| {backbone} | {layout} | {train:.0f} | {fwd:.0f} |")


if __name__ == "__main__":
    main()
