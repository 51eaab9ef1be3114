"""One-shot weight averaging (FedAvg's single round): the site experts' parameters averaged,
weighted by their training-set sizes, as one network on site-normalized images.

Artifact: ``baselines/weight_average.safetensors``.
"""

from __future__ import annotations

from sitefusion.evaluation.method_families import WEIGHT_AVERAGE
from sitefusion.experts import average_state_dicts
from sitefusion.methods.base import SiteNormalizedNetwork
from sitefusion.training.context import TrainContext

__all__ = ["WeightAverage"]

_REL = "baselines/weight_average.safetensors"


class WeightAverage(SiteNormalizedNetwork):
    """The experts' weights averaged into one network."""

    name = WEIGHT_AVERAGE.name
    ARTIFACT = _REL

    def fit(self, ctx: TrainContext) -> None:
        if self.is_trained(ctx.run):
            return
        states = [ctx.run.read_tensors(f"experts/{s}.safetensors") for s in ctx.sites]
        sizes = [float(len(ctx.data.rows("train", site=s))) for s in ctx.sites]
        ctx.run.write_tensors(_REL, average_state_dicts(states, sizes))
