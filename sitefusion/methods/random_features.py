"""The random-feature control: the product fusion, trained identically, on *untrained* experts.

Every expert starts from the same initial weights (``experts/init.safetensors``), so this control
is exactly "the fusion before the site experts learned anything"; ``fusion - random_features``
is what training the site experts adds. With fine-tuning it gets the same end-to-end treatment,
starting from the initial weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sitefusion.config import Config
from sitefusion.errors import ArtifactError
from sitefusion.evaluation.method_families import RANDOM_FEATURES
from sitefusion.experts import SiteExpert, build_expert
from sitefusion.methods.base import ImageBatch, LoadContext, Method, network_input
from sitefusion.methods.fusion import FusionMethod, _expert_outputs
from sitefusion.training.context import TrainContext
from sitefusion.training.features import ExpertFeatures

__all__ = ["RandomFeaturesControl"]


class RandomFeaturesControl(FusionMethod):
    """The product fusion's mode on the untrained initial experts' features."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode, name=RANDOM_FEATURES.name)
        self.initial_: SiteExpert | None = None

    @classmethod
    def configured(cls, cfg: Config, sites: Sequence[str]) -> list[Method]:
        """The control on the product fusion's mode (the first of ``fusion.modes``)."""
        return [cls(cfg.fusion.modes[0])]

    def _cache(self, ctx: TrainContext) -> ExpertFeatures:
        if ctx.random_features is None:
            raise ArtifactError(f"{ctx.run.root}: no random-feature cache to train the control on")
        if ctx.random_features.ids != ctx.require_features().ids:
            raise ArtifactError("the random and trained feature caches hold different images")
        return ctx.random_features

    def _start_experts(self, ctx: TrainContext) -> list[SiteExpert]:
        init = ctx.run.read_tensors("experts/init.safetensors")
        experts = []
        for _ in ctx.sites:
            expert = build_expert(ctx.cfg, ctx.num_classes)
            expert.load_state_dict(init)
            experts.append(expert)
        return experts

    def _tuned(self, ctx: TrainContext) -> bool:
        return ctx.cfg.fusion.finetune_epochs > 0

    def load(self, ctx: LoadContext) -> RandomFeaturesControl:
        super().load(ctx)
        if self.experts_ is None:
            initial = build_expert(ctx.cfg, ctx.num_classes)
            initial.load_state_dict(ctx.run.read_tensors("experts/init.safetensors"))
            self.initial_ = initial.to(ctx.device).eval()
        return self

    def forward(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        if self.experts_ is not None:
            return _expert_outputs(self.experts_, batch.normalized)
        if self.initial_ is None:
            raise self._unfitted()
        # Every expert starts from the same weights, so the untrained features are the same for
        # each expert: computed once, repeated over the expert axis.
        xb = network_input(batch.normalized, self.initial_)
        e = self.head.config["num_experts"]
        with torch.inference_mode():
            z = self.initial_.embed(xb)
            logits = self.initial_.head(z)
        return {
            "features": np.repeat(z.float().cpu().numpy()[:, None, :], e, axis=1),
            "logits": np.repeat(logits.float().cpu().numpy()[:, None, :], e, axis=1),
        }
