"""A site's own expert on its own: ``local:<site>``, the expert's linear head on its features.

Nothing is trained here beyond the site expert itself (the expert stage of a run); the method
reads that expert's logits from the shared pass through the experts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sitefusion.config import Config
from sitefusion.evaluation.method_families import LOCAL
from sitefusion.methods.base import LoadContext, Method, MethodOutput, OwnOutputs, softmax_rows
from sitefusion.rundir import RunDir
from sitefusion.training.context import TrainContext
from sitefusion.training.features import ExpertFeatures

__all__ = ["LocalExpert", "local_name"]


def local_name(site: str) -> str:
    """The method name of site ``site``'s expert: ``local:<site>``."""
    return LOCAL.site_method(site)


class LocalExpert(Method):
    """The expert of one site, used alone (on every site's images)."""

    def __init__(self, site: str, index: int) -> None:
        self.site = site
        self.index = index
        self.name = local_name(site)

    @classmethod
    def configured(cls, cfg: Config, sites: Sequence[str]) -> list[Method]:
        """One per expert site, in the experts' order."""
        return [cls(site, i) for i, site in enumerate(sites)]

    def is_trained(self, run: RunDir) -> bool:
        return run.has(f"experts/{self.site}.safetensors")

    def fit(self, ctx: TrainContext) -> None:
        """Nothing to do: the expert stage trained the site's expert."""

    def load(self, ctx: LoadContext) -> LocalExpert:
        return self

    def predict(
        self,
        experts: ExpertFeatures,
        own: OwnOutputs,
        mask: np.ndarray | None = None,
        *,
        calibrated: bool = False,
    ) -> MethodOutput:
        return MethodOutput(softmax_rows(experts.logits[:, self.index]))
