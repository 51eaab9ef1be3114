"""Experts and fusion head as one network, for end-to-end fine-tuning and Grad-CAM.

The fused system's experts are copies of the site experts that belong to the fusion method; they
are stored as one flat safetensors file (:func:`expert_states` / :func:`load_expert_states`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sitefusion.experts import SiteExpert
from sitefusion.fusion.base import FusionOutput
from sitefusion.fusion.classifier import FusionClassifier

__all__ = ["FusedSystem", "expert_states", "load_expert_states"]


class FusedSystem(nn.Module):
    """Experts and fusion head as one network: images ``[B, C, *S]`` -> :class:`FusionOutput`."""

    def __init__(self, experts: Sequence[SiteExpert], head: FusionClassifier) -> None:
        super().__init__()
        if not experts:
            raise ValueError("FusedSystem needs at least one expert")
        self.experts = nn.ModuleList(experts)
        self.head = head

    def expert_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[B, E, D]`` and local logits ``[B, E, K]`` of every expert."""
        experts: list[SiteExpert] = list(self.experts)  # type: ignore[arg-type]
        zs = [e.embed(x) for e in experts]
        logits = [e.head(z) for e, z in zip(experts, zs, strict=True)]
        return torch.stack(zs, 1), torch.stack(logits, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> FusionOutput:
        features, logits = self.expert_outputs(x)
        out: FusionOutput = self.head(features, logits, mask)
        return out


def expert_states(experts: Sequence[SiteExpert], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """One flat state dict ``{"<name>.<param>": tensor}`` for a safetensors file."""
    return {
        f"{name}.{k}": v
        for name, e in zip(names, experts, strict=True)
        for k, v in e.state_dict().items()
    }


def load_expert_states(
    tensors: dict[str, torch.Tensor], experts: Sequence[SiteExpert], names: Sequence[str]
) -> None:
    """Load :func:`expert_states` output back into ``experts`` (in place)."""
    for name, e in zip(names, experts, strict=True):
        prefix = f"{name}."
        e.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
