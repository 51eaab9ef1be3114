"""What software and hardware a run was trained with, for its manifest.

Training with the same configuration and seed is bit-for-bit repeatable on one machine, but not
across machines: CPU kernels and unpinned library versions change the last bits of a convolution,
and a few epochs of training turn those into different weights (docs/benchmarks.md measured it on
HAM10000). The run manifest therefore records the environment of every ``train`` invocation, so
that two runs whose weights differ can be told apart by cause. Nothing here identifies a person.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "KERNEL_VARIABLES",
    "PACKAGES",
    "environment_info",
    "package_version",
    "record_environment",
]

#: Distributions whose versions can change numerical results or file formats.
PACKAGES: tuple[str, ...] = (
    "sitefusion",
    "torch",
    "monai",
    "numpy",
    "scipy",
    "scikit-learn",
    "pillow",
    "nibabel",
    "pydicom",
    "safetensors",
)


#: Environment variables that choose which CPU kernels (or how many threads) torch, oneDNN and
#: MKL use. On one machine, lowering ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA`` each
#: changed the weights 20 training steps end with (docs/benchmarks.md).
KERNEL_VARIABLES: tuple[str, ...] = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "OMP_NUM_THREADS",
)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None if it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_capability() -> str | None:
    """The vector instruction set torch dispatches its CPU kernels to (``"AVX512"``, ``"AVX2"``,
    ``"DEFAULT"``...): two CPUs with one model name can differ here, and so can their results."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # an older or unusual torch build
        return None


def environment_info() -> dict[str, Any]:
    """Python, platform, CPU and its kernel instruction set, those of :data:`KERNEL_VARIABLES`
    that are set, torch thread count and the versions of :data:`PACKAGES`."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_capability": _cpu_capability(),
        "kernel_variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "packages": {name: package_version(name) for name in PACKAGES},
    }


def record_environment(manifest: dict[str, Any], current: dict[str, Any]) -> bool:
    """Append ``current`` to ``manifest["environments"]`` unless it equals the last entry.

    Returns True when the run was resumed in a different environment than it was last trained
    in (its weights may then differ from an uninterrupted run's).
    """
    history = manifest.setdefault("environments", [])
    if not isinstance(history, list):
        history = manifest["environments"] = []
    changed = bool(history) and history[-1] != current
    if not history or changed:
        history.append(current)
    return changed
