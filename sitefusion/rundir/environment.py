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

from sitefusion.errors import ConfigError

__all__ = [
    "KERNEL_VARIABLES",
    "PACKAGES",
    "environment_info",
    "package_version",
    "pin_cpu_kernels",
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


#: For each level of ``training.cpu_isa``: the value of ``ATEN_CPU_CAPABILITY`` (torch's own
#: kernels), of ``ONEDNN_MAX_CPU_ISA`` (oneDNN's convolutions) and what
#: ``torch.backends.cpu.get_cpu_capability()`` then reports.
CPU_ISA_LEVELS: dict[str, tuple[str, str, str]] = {
    "avx2": ("avx2", "AVX2", "AVX2"),
    "avx512": ("avx512", "AVX512_CORE", "AVX512"),
}


def pin_cpu_kernels(isa: str | None, source: str | None = None) -> list[str]:
    """Cap torch's and oneDNN's CPU kernels at instruction set ``isa``; returns warnings.

    Both libraries read their variable once, when they first choose a kernel: this sets
    ``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA`` for the rest of the process, which pins the
    kernels if nothing has run on them yet (the case for ``sitefusion train``). A variable the user
    already set to another value is an error, not overridden. Torch reports the level it
    dispatches to, so a process where it already chose a higher one, or a CPU without ``isa``,
    gets a warning: its weights will not be those that CPUs running ``isa`` train. oneDNN offers
    no such report; the run manifest records the variables and torch's level either way.
    ``source`` (the config file) prefixes the error.
    """
    if isa is None:
        return []
    if isa not in CPU_ISA_LEVELS:
        raise ValueError(f"unknown cpu_isa {isa!r}; expected one of {sorted(CPU_ISA_LEVELS)}")
    aten, onednn, reported = CPU_ISA_LEVELS[isa]
    for name, value in (("ATEN_CPU_CAPABILITY", aten), ("ONEDNN_MAX_CPU_ISA", onednn)):
        current = os.environ.get(name)
        if current is not None and current.lower() != value.lower():
            where = f"{source}: " if source else ""
            raise ConfigError(
                f"{where}training.cpu_isa is {isa!r} but the environment sets {name}={current}; "
                f"unset {name} or change training.cpu_isa"
            )
        os.environ[name] = value
    actual = _cpu_capability()
    if actual is not None and actual != reported:
        return [
            f"training.cpu_isa is {isa!r} but torch dispatches to {actual} kernels in this "
            f"process (the CPU lacks {isa}, or torch chose its kernels before the pin; set "
            f"ATEN_CPU_CAPABILITY={aten} ONEDNN_MAX_CPU_ISA={onednn} before starting Python): "
            "the weights will differ from those trained with the pin"
        ]
    return []


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
