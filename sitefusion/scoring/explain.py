"""Explanations of a score: Grad-CAM of the most-weighted expert, and the expert weights.

For each explained image two small PNGs are written: the Grad-CAM map of the expert the fusion
relied on most (MONAI's :class:`monai.visualize.GradCAM`, for the class the fusion predicted)
over the image as the run saw it (conformed to the run's size; the middle slice of a volume),
and a bar chart of the fusion's weights per expert.

Target layer: the last convolution the backbone runs, raised to its highest enclosing module
whose output keeps that convolution's spatial grid (for the ResNet backbones that is
``layer4``, the output of the last residual stage, rather than its 1x1 shortcut convolution).
Grad-CAM runs on a private copy of the expert: MONAI registers hooks on the module it wraps.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sitefusion.errors import OutputFolderError
from sitefusion.rundir import atomic_write
from sitefusion.scoring.outputs import publish

__all__ = ["GradCamExplainer", "find_target_layer"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _ExpertLogits(nn.Module):
    """``[B, C, *S] -> [B, K]``: the expert's own class logits (what Grad-CAM differentiates)."""

    def __init__(self, expert: nn.Module) -> None:
        super().__init__()
        self.expert = expert

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.expert(x)
        return out


def find_target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name (in ``model.named_modules()``) of the Grad-CAM target layer.

    Runs ``model`` once on ``example`` ``[1, C, *S]`` with forward hooks, takes the last
    convolution executed and returns its highest ancestor whose output has the same spatial
    shape (see the module docstring).

    Raises:
        ValueError: the model runs no convolution.
    """
    outputs: dict[str, tuple[int, ...] | None] = {}
    order: list[str] = []
    handles = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inp: Any, out: Any) -> None:
        name = names[module]
        outputs[name] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        if isinstance(module, _CONV):
            order.append(name)

    for module in names:
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError(f"{type(model).__name__} runs no convolution: no Grad-CAM target")
    last = order[-1]
    shape = outputs[last]
    parts = last.split(".")
    for depth in range(1, len(parts)):
        ancestor = ".".join(parts[:depth])
        out = outputs.get(ancestor)
        if (
            out is not None
            and shape is not None
            and len(out) == len(shape)
            and out[2:] == shape[2:]
        ):
            return ancestor
    return last


def _display(image: np.ndarray) -> np.ndarray:
    """``[C, *S]`` -> a 2D grey ``[H, W]`` or RGB ``[H, W, 3]`` array in [0, 1] (middle slice)."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 4:
        a = a[:, a.shape[1] // 2]
    lo, hi = np.percentile(a, [0.5, 99.5])
    a = np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)
    return a.transpose(1, 2, 0) if a.shape[0] == 3 else a[0]


class GradCamExplainer:
    """Grad-CAM overlays and weight charts for a run's experts.

    Args:
        experts: the run's trained experts (left untouched; copies are hooked).
        sites: expert names, in expert order.
        classes: class names.
        example_shape: ``[C, *S]`` of the run's conformed images.
    """

    def __init__(
        self,
        experts: Sequence[nn.Module],
        sites: Sequence[str],
        classes: Sequence[str],
        example_shape: Sequence[int],
    ) -> None:
        if len(experts) != len(sites):
            raise ValueError(f"{len(experts)} experts but {len(sites)} site names")
        self.experts = list(experts)
        self.sites = list(sites)
        self.classes = list(classes)
        self.example_shape = tuple(int(s) for s in example_shape)
        self._cams: dict[int, Any] = {}
        self.target_layers: dict[int, str] = {}

    def _cam(self, index: int) -> Any:
        from monai.visualize import GradCAM

        if index not in self._cams:
            # Grad-CAM runs on the CPU whatever the scoring device: one image at a time, with
            # gradients, it gains little from a GPU and its maps stay the same on any machine.
            model = _ExpertLogits(copy.deepcopy(self.experts[index]).cpu()).eval()
            for p in model.parameters():
                p.requires_grad_(True)
            layer = find_target_layer(model, torch.zeros((1, *self.example_shape)))
            self.target_layers[index] = layer
            self._cams[index] = GradCAM(nn_module=model, target_layers=layer)
        return self._cams[index]

    def cam_map(self, expert_index: int, normalized: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM of expert ``expert_index`` for class ``class_index`` on one normalized image
        ``[C, *S]``; returns ``[*S]`` scaled to [0, 1]."""
        cam = self._cam(expert_index)
        x = torch.from_numpy(np.ascontiguousarray(normalized, dtype=np.float32))[None]
        with torch.inference_mode(False), torch.enable_grad():
            result = cam(x=x.clone(), class_idx=int(class_index))
        out = np.asarray(result.detach().cpu().numpy(), dtype=np.float64)[0, 0]
        return np.nan_to_num(out, nan=0.0)

    def explain(
        self,
        out_dir: Path,
        key: str,
        *,
        image: np.ndarray,
        normalized: np.ndarray,
        weights: np.ndarray,
        class_index: int,
        probability: float,
    ) -> list[str]:
        """Write ``explain/<key>_gradcam.png`` and ``explain/<key>_weights.png`` under
        ``out_dir``; return their paths relative to ``out_dir``.

        Args:
            image: the conformed image ``[C, *S]`` (shown under the map).
            normalized: the same image after site normalization (what the expert saw).
            weights: the fusion's expert weights ``[E]``; the largest picks the expert.
            class_index: the predicted class, whose evidence the map shows.
            probability: its fused probability (printed in the title).
        """
        expert = int(np.argmax(weights))
        heat = self.cam_map(expert, normalized, class_index)
        if heat.ndim == 3:
            heat = heat[heat.shape[0] // 2]
        folder = out_dir / "explain"
        folder.mkdir(parents=True, exist_ok=True)
        gradcam = f"explain/{key}_gradcam.png"
        chart = f"explain/{key}_weights.png"
        self._overlay(
            out_dir / gradcam,
            _display(image),
            heat,
            f"{self.classes[class_index]} (p={probability:.2f})\n"
            f"Grad-CAM, expert {self.sites[expert]} (weight {weights[expert]:.2f})",
        )
        self._weights_chart(out_dir / chart, np.asarray(weights, dtype=np.float64), expert)
        return [gradcam, chart]

    @staticmethod
    def _save(fig: Any, path: Path) -> None:
        """Write the figure atomically; a full disk or a refused write names the file."""
        try:
            with atomic_write(path, "wb") as fh:
                fig.savefig(fh, format="png", dpi=100, metadata={"Software": None})
            publish(path)
        except OSError as err:
            raise OutputFolderError(
                f"{path}: cannot write the explanation: {err.strerror or err}"
            ) from err

    def _overlay(self, path: Path, base: np.ndarray, heat: np.ndarray, title: str) -> None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.2, 3.5))
        ax = fig.add_subplot()
        ax.imshow(base, cmap="gray" if base.ndim == 2 else None, interpolation="nearest")
        ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0, interpolation="bilinear")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        fig.tight_layout()
        self._save(fig, path)

    def _weights_chart(self, path: Path, weights: np.ndarray, chosen: int) -> None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.2, 0.5 + 0.3 * len(weights)))
        ax = fig.add_subplot()
        colours = ["tab:orange" if i == chosen else "tab:blue" for i in range(len(weights))]
        ax.barh(range(len(weights)), weights, color=colours)
        ax.set_yticks(range(len(weights)), self.sites, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("fusion weight", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        self._save(fig, path)
