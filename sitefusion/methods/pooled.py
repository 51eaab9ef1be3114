"""Pooled training: one network of the experts' architecture on every site's images together.

The reference a multi-site method must beat, and the one a federation cannot have (it needs all
images in one place). It learns from the union of the training and fusion splits, normalized by
the pooled normalizer (fitted on all sites' training splits), validated on every site's
validation split. Artifacts: ``baselines/pooled.safetensors`` and its ``.json`` curve.
"""

from __future__ import annotations

import numpy as np
import torch

from sitefusion.evaluation.method_families import POOLED
from sitefusion.experts import SiteExpert
from sitefusion.methods.base import (
    ImageBatch,
    LoadContext,
    Method,
    MethodOutput,
    OwnOutputs,
    load_network,
    network_input,
    softmax_rows,
)
from sitefusion.rundir import RunDir
from sitefusion.training.context import TrainContext, normalize_rows
from sitefusion.training.features import ExpertFeatures
from sitefusion.training.stages import train_network

__all__ = ["PooledMethod"]

_STEM = "baselines/pooled"


class PooledMethod(Method):
    """One network trained on all sites pooled."""

    name = POOLED.name
    reads_features = False

    def __init__(self) -> None:
        self.network_: SiteExpert | None = None

    def is_trained(self, run: RunDir) -> bool:
        return run.has(f"{_STEM}.safetensors")

    def fit(self, ctx: TrainContext) -> None:
        if self.is_trained(ctx.run):
            return
        data = ctx.data
        tr, va = data.rows("train", "fusion"), data.rows("val")
        ctx.log(f"[bold]pooled baseline[/]: {len(tr)} training, {len(va)} validation images")
        train_network(
            ctx.cfg,
            ctx.run,
            data,
            _STEM,
            normalize_rows(ctx.bank, data, tr, pooled=True),
            data.labels[tr],
            normalize_rows(ctx.bank, data, va, pooled=True),
            data.labels[va],
            ctx.cfg.seed,
            ctx.console,
        )

    def load(self, ctx: LoadContext) -> PooledMethod:
        self.network_ = load_network(ctx, f"{_STEM}.safetensors")
        return self

    def forward(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        if self.network_ is None:
            raise self._unfitted()
        xp = np.stack([batch.bank.pooled_.transform(image) for image in batch.raw])
        with torch.inference_mode():
            logits = self.network_(network_input(xp, self.network_))
            return {"logits": logits.float().cpu().numpy()}

    def predict(
        self,
        experts: ExpertFeatures,
        own: OwnOutputs,
        mask: np.ndarray | None = None,
        *,
        calibrated: bool = False,
    ) -> MethodOutput:
        return MethodOutput(softmax_rows(own["logits"]))
