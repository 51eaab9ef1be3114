"""Output averaging: the mean of the present experts' softmax outputs (no training)."""

from __future__ import annotations

import numpy as np

from sitefusion.evaluation.method_families import OUTPUT_AVERAGE
from sitefusion.methods.base import LoadContext, Method, MethodOutput, OwnOutputs, softmax_rows
from sitefusion.rundir import RunDir
from sitefusion.training.context import TrainContext
from sitefusion.training.features import ExpertFeatures

__all__ = ["OutputAverage"]


class OutputAverage(Method):
    """Mean over the present experts of each expert's class probabilities."""

    name = OUTPUT_AVERAGE.name

    def is_trained(self, run: RunDir) -> bool:
        return True

    def fit(self, ctx: TrainContext) -> None:
        """Nothing to learn."""

    def load(self, ctx: LoadContext) -> OutputAverage:
        return self

    def predict(
        self,
        experts: ExpertFeatures,
        own: OwnOutputs,
        mask: np.ndarray | None = None,
        *,
        calibrated: bool = False,
    ) -> MethodOutput:
        local = softmax_rows(experts.logits)  # [N, E, K]
        if mask is None:
            return MethodOutput(local.mean(1))
        w = mask.astype(np.float64)[:, :, None]
        return MethodOutput((local * w).sum(1) / w.sum(1))
