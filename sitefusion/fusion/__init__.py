"""Fusion heads over site experts' features ``[B, E, D]`` with a presence mask ``[B, E]``.

Every head returns :class:`FusionOutput` ``(logits [B, C], weights [B, E])``; see
:mod:`sitefusion.fusion.base` for the shared contract and input normalisation.
:class:`FusionClassifier` adds the input preparation a trained head keeps;
:class:`FusedSystem` joins expert copies and a classifier into one network.
"""

from sitefusion.fusion.attention import AttentionFusion
from sitefusion.fusion.average_attention import AverageAttentionFusion
from sitefusion.fusion.base import (
    ExpertProjection,
    FusionInputError,
    FusionModule,
    FusionOutput,
    masked_softmax,
)
from sitefusion.fusion.classifier import FusionClassifier
from sitefusion.fusion.concat import ConcatFusion
from sitefusion.fusion.gated_attention import GatedAttention
from sitefusion.fusion.registry import FUSION_CLASSES, FUSION_MODES, make_fusion
from sitefusion.fusion.system import FusedSystem, expert_states, load_expert_states

__all__ = [
    "FUSION_CLASSES",
    "FUSION_MODES",
    "AttentionFusion",
    "AverageAttentionFusion",
    "ConcatFusion",
    "ExpertProjection",
    "FusedSystem",
    "FusionClassifier",
    "FusionInputError",
    "FusionModule",
    "FusionOutput",
    "GatedAttention",
    "expert_states",
    "load_expert_states",
    "make_fusion",
    "masked_softmax",
]
