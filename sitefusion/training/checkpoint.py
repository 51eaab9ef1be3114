"""Per-epoch training checkpoints as safetensors + JSON (model, optimizer, best weights, history).

The optimizer's state dict is flattened into named tensors (``opt.<param>.<key>``); its
non-tensor part goes to the JSON sidecar. Nothing is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sitefusion.errors import ArtifactError
from sitefusion.rundir import RunDir

__all__ = ["TrainingState", "load_checkpoint", "save_checkpoint"]


@dataclass
class TrainingState:
    """Where a training loop stands after ``epoch`` (0-based) finished."""

    epoch: int
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: bool = False


def save_checkpoint(
    run: RunDir,
    stem: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, torch.Tensor],
    state: TrainingState,
) -> None:
    """Write ``<stem>.ckpt.safetensors`` and ``<stem>.ckpt.json`` (tensors first, then JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v
    for k, v in best_state.items():
        tensors[f"best.{k}"] = v
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    run.write_tensors(f"{stem}.ckpt.safetensors", tensors)
    run.write_json(
        f"{stem}.ckpt.json",
        {
            "epoch": state.epoch,
            "best_epoch": state.best_epoch,
            "best_score": state.best_score,
            "history": state.history,
            "stopped": state.stopped,
            "param_groups": opt["param_groups"],
            "opt_scalars": scalars,
        },
    )


def load_checkpoint(
    run: RunDir, stem: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[TrainingState, dict[str, torch.Tensor]] | None:
    """Restore model and optimizer from ``<stem>.ckpt.*``; ``None`` when there is none yet."""
    if not (run.has(f"{stem}.ckpt.json") and run.has(f"{stem}.ckpt.safetensors")):
        return None
    meta = run.read_json(f"{stem}.ckpt.json")
    tensors = run.read_tensors(f"{stem}.ckpt.safetensors")
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as err:
        raise ArtifactError(
            f"{run.root / (stem + '.ckpt.safetensors')}: checkpoint does not fit the configured "
            f"network ({err})"
        ) from err
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    for pid, extra in meta.get("opt_scalars", {}).items():
        opt_state.setdefault(int(pid), {}).update(extra)
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    state = TrainingState(
        epoch=int(meta["epoch"]),
        best_epoch=int(meta["best_epoch"]),
        best_score=float(meta["best_score"]),
        history=list(meta["history"]),
        stopped=bool(meta.get("stopped", False)),
    )
    return state, best
