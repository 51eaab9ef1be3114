"""One-shot weight averaging (FedAvg's single round): the site experts' parameters averaged,
weighted by their training-set sizes, as one network on site-normalized images.

Artifact: ``baselines/weight_average.safetensors``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sitefusion.evaluation.method_families import WEIGHT_AVERAGE
from sitefusion.experts import average_state_dicts
from sitefusion.methods.base import SiteNormalizedNetwork
from sitefusion.rundir import RunDir
from sitefusion.training.context import TrainContext

__all__ = ["WeightAverage"]

_REL = "baselines/weight_average.safetensors"


class WeightAverage(SiteNormalizedNetwork):
    """The experts' weights averaged into one network."""

    name = WEIGHT_AVERAGE.name
    ARTIFACT = _REL

    def fit(self, ctx: TrainContext) -> None:
        if not self.is_trained(ctx.run):
            self.average(ctx.run, ctx.sites)

    @staticmethod
    def average(run: RunDir, sites: Sequence[str]) -> None:
        """Write the average of ``run``'s experts of ``sites``, each weighted by its training-set
        size as its record states (``experts/<site>.json``: ``n_train``); central training and a
        federation's coordinator both call this."""
        states = [run.read_tensors(f"experts/{s}.safetensors") for s in sites]
        sizes = [float(run.read_json(f"experts/{s}.json")["n_train"]) for s in sites]
        run.write_tensors(_REL, average_state_dicts(states, sizes))
