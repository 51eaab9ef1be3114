"""Where networks train and predict: ``training.device`` and ``training.precision``.

Every stage that runs a network (experts, pooled, FedAvg, feature caches, fusion heads,
fine-tuning, evaluation and scoring through :class:`~sitefusion.methods.LoadedRun`) resolves its
device here. The rule that keeps the CPU path bit-identical to before: random generators, index
orders and masks are drawn on the CPU (so a CUDA run draws the same batches), and every batch is
moved to the device in one place, :func:`sitefusion.training.engine.train_epoch`; a trained
network is handed back on the CPU, where artifacts are written and numpy predictions are made.

Mixed precision is a CUDA option (``training.precision``: ``bf16`` where the GPU supports it,
``fp16`` with a gradient scaler); ``fp32`` everywhere else.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from sitefusion.errors import ConfigError

__all__ = ["PRECISIONS", "GradientStep", "autocast", "resolve_device"]

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


def resolve_device(name: str | torch.device, field: str = "training.device") -> torch.device:
    """``name`` as a :class:`torch.device`, refused with :class:`ConfigError` (naming ``field``)
    when it asks for CUDA on a machine where ``torch.cuda.is_available()`` is False, or for a
    GPU index that does not exist."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{field} is {str(name)!r} but torch.cuda.is_available() is False on this "
                f"machine (torch {torch.__version__}); use 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{field} is {str(name)!r} but this machine has {torch.cuda.device_count()} "
                "CUDA device(s)"
            )
    elif device.type != "cpu":
        raise ConfigError(f"{field} is {str(name)!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return device


def _dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ConfigError(f"training.precision is {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if device.type != "cuda":
        raise ConfigError(
            f"training.precision is {precision!r} but the device is {device}; mixed precision "
            "is a CUDA option"
        )
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "training.precision is 'bf16' but this GPU does not support bfloat16; use 'fp16'"
        )
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(
    device: torch.device, precision: str = "fp32"
) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's autocast region (a no-op for ``fp32``)."""
    dtype = _dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class GradientStep:
    """Backward pass and optimizer step, with a gradient scaler for ``fp16`` (bf16 and fp32 have
    the range to do without)."""

    def __init__(self, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision
        self.scaler = (
            torch.amp.GradScaler("cuda") if _dtype(device, precision) == torch.float16 else None
        )

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's autocast region."""
        return autocast(self.device, self.precision)

    def __call__(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        """Zero the gradients, back-propagate ``loss`` and step ``optimizer``."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
