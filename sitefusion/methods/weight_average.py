"""One-shot weight averaging (FedAvg's single round): the site experts' parameters averaged,
weighted by their training-set sizes, as one network on site-normalized images.

Artifact: ``baselines/weight_average.safetensors``.
"""

from __future__ import annotations

import numpy as np
import torch

from sitefusion.experts import SiteExpert, average_state_dicts
from sitefusion.methods.base import (
    ImageBatch,
    LoadContext,
    Method,
    MethodOutput,
    OwnOutputs,
    load_network,
    softmax_rows,
)
from sitefusion.rundir import RunDir
from sitefusion.training.context import TrainContext
from sitefusion.training.features import ExpertFeatures

__all__ = ["WeightAverage"]

_REL = "baselines/weight_average.safetensors"


class WeightAverage(Method):
    """The experts' weights averaged into one network."""

    name = "weight_average"

    def __init__(self) -> None:
        self.network_: SiteExpert | None = None

    def is_trained(self, run: RunDir) -> bool:
        return run.has(_REL)

    def fit(self, ctx: TrainContext) -> None:
        if self.is_trained(ctx.run):
            return
        states = [ctx.run.read_tensors(f"experts/{s}.safetensors") for s in ctx.sites]
        sizes = [float(len(ctx.data.rows("train", site=s))) for s in ctx.sites]
        ctx.run.write_tensors(_REL, average_state_dicts(states, sizes))

    def load(self, ctx: LoadContext) -> WeightAverage:
        self.network_ = load_network(ctx, _REL)
        return self

    def forward(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        if self.network_ is None:
            raise self._unfitted()
        with torch.inference_mode():
            x = torch.from_numpy(batch.normalized.astype(np.float32, copy=False))
            return {"logits": self.network_(x).numpy()}

    def predict(
        self,
        experts: ExpertFeatures,
        own: OwnOutputs,
        mask: np.ndarray | None = None,
        *,
        calibrated: bool = False,
    ) -> MethodOutput:
        return MethodOutput(softmax_rows(own["logits"]))
