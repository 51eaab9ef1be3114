"""Do the CPU kernels torch picks change what training produces? A 20-step fingerprint.

Trains the expert of ``configs/ham10000-compact.yaml`` (built as ``sitefusion train`` builds it: the
``compact`` MONAI ResNet on 3x64x64 inputs, one output per class) for 20 AdamW steps on one fixed batch of random images and prints the instruction set
torch dispatched to, the final loss and a SHA-256 prefix of the weights. Run it under different
kernel-selecting environment variables (they must be set before torch starts) and compare the
fingerprints: equal means bit-identical weights.

Run::

    .venv/bin/python benchmarks/kernel_dispatch.py
    ATEN_CPU_CAPABILITY=default .venv/bin/python benchmarks/kernel_dispatch.py
    ONEDNN_MAX_CPU_ISA=SSE41 .venv/bin/python benchmarks/kernel_dispatch.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from sitefusion.config import load_config
from sitefusion.experts import build_expert
from sitefusion.rundir.environment import environment_info

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ham10000-compact.yaml"


def main() -> None:
    cfg = load_config(CONFIG)
    num_classes = len(cfg.data.classes)
    shape = (32, cfg.data.channels, *cfg.data.spatial_size)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build_expert(cfg, num_classes)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    y = torch.arange(32) % num_classes
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loss = torch.zeros(())
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().numpy().tobytes())
    env = environment_info()
    print(
        f"cpu_capability={env['cpu_capability']} kernel_variables={env['kernel_variables']} "
        f"loss={float(loss.detach()):.10f} weights_sha256={digest.hexdigest()[:16]}"
    )


if __name__ == "__main__":
    main()
