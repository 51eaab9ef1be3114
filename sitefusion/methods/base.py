"""The one protocol every method follows: fit from a training context, save to and load from the
run directory, predict probabilities (and, for fusions, per-expert weights) from the experts'
outputs.

Prediction has two steps so that every image passes once through every network:

1. :meth:`Method.forward` runs on each batch of images and returns what the method's *own*
   networks compute (the pooled model's logits, a fine-tuned fusion's expert copies' features);
   methods that only read the site experts' outputs return nothing.
2. :meth:`Method.predict` turns the site experts' outputs ``[N, E, D]`` / ``[N, E, K]`` on all
   images, plus its own arrays gathered from step 1, into probabilities ``[N, K]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.special import softmax

from sitefusion.config import Config
from sitefusion.errors import ArtifactError
from sitefusion.experts import SiteExpert, build_expert
from sitefusion.normalization import NormalizerBank
from sitefusion.rundir import RunDir
from sitefusion.training.context import TrainContext
from sitefusion.training.features import ExpertFeatures

__all__ = [
    "ImageBatch",
    "LoadContext",
    "Method",
    "MethodOutput",
    "OwnOutputs",
    "SiteNormalizedNetwork",
    "concat_own",
    "load_network",
    "network_input",
    "softmax_rows",
]

#: The default device of loaded networks.
CPU = torch.device("cpu")

#: Arrays a method's own networks computed, by name, each with the images along axis 0.
OwnOutputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ImageBatch:
    """One batch of ``B`` images on their way through a run's networks.

    ``normalized [B, C, *S]``: each image by its own site's normalizer (or the unseen-site
    policy); ``raw [B, C, *S]``: the conformed images before normalization, for a method with a
    normalization of its own (pooled training); ``bank``: the normalizers in use.
    """

    normalized: np.ndarray
    raw: np.ndarray
    bank: NormalizerBank


@dataclass(frozen=True)
class MethodOutput:
    """``probs [N, K]`` (rows sum to 1) and, for a fusion, ``weights [N, E]`` over the experts."""

    probs: np.ndarray
    weights: np.ndarray | None = None


@dataclass(frozen=True)
class LoadContext:
    """What a method needs to rebuild itself from a finished run directory."""

    run: RunDir
    cfg: Config
    classes: tuple[str, ...]
    sites: tuple[str, ...]
    #: Where the method's networks run (a :class:`~sitefusion.methods.LoadedRun`'s device).
    device: torch.device = CPU

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.classes)


class Method(ABC):
    """A way of predicting a class from a run's site experts, trained and stored in the run.

    ``__init__`` only stores what names the method (``name``, a mode, a site); ``fit`` trains it
    and writes its artifacts (skipping what the run already holds, so training resumes);
    ``load`` reads them back (hash-checked). Using a method that is neither fitted nor loaded
    raises :class:`~sitefusion.errors.ArtifactError`.
    """

    #: The method's name in reports and ``metrics.json`` (``fusion``, ``local:<site>``, ...).
    name: str
    #: Whether ``fit`` reads the feature cache (``False``: it trains on images, before the
    #: feature stage).
    reads_features: ClassVar[bool] = True

    @classmethod
    def configured(cls, cfg: Config, sites: Sequence[str]) -> list[Method]:
        """The methods of this class that a run of ``cfg`` with experts of ``sites`` trains once
        its family's switch is on (:func:`sitefusion.methods.registry.configured_methods`): by
        default one, built without arguments."""
        return [cls()]

    @abstractmethod
    def fit(self, ctx: TrainContext) -> None:
        """Train the method and write its artifacts into ``ctx.run``."""

    @abstractmethod
    def is_trained(self, run: RunDir) -> bool:
        """Whether ``run`` already holds this method's artifacts."""

    @abstractmethod
    def load(self, ctx: LoadContext) -> Method:
        """Read the method's artifacts from ``ctx.run``; returns ``self``."""

    def forward(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        """The method's own networks on one batch (default: none)."""
        return {}

    @abstractmethod
    def predict(
        self,
        experts: ExpertFeatures,
        own: OwnOutputs,
        mask: np.ndarray | None = None,
        *,
        calibrated: bool = False,
    ) -> MethodOutput | None:
        """Probabilities ``[N, K]`` from the site experts' outputs on ``N`` images.

        ``own``: the arrays :meth:`forward` returned, concatenated over the batches;
        ``mask [N, E]``: experts present (``None``: all); ``calibrated``: apply the stored
        temperature, where the method has one. ``None``: the method cannot predict under this
        mask (stacking needs every expert).
        """

    def _unfitted(self) -> ArtifactError:
        return ArtifactError(f"method {self.name!r} is not fitted or loaded; call fit or load")


class SiteNormalizedNetwork(Method):
    """A method that is one network of the experts' architecture on images normalized by their
    own site's normalizer (one-shot weight averaging, FedAvg): ``ARTIFACT`` holds its weights."""

    ARTIFACT: ClassVar[str]

    def __init__(self) -> None:
        self.network_: SiteExpert | None = None

    def is_trained(self, run: RunDir) -> bool:
        return run.has(self.ARTIFACT)

    def load(self, ctx: LoadContext) -> SiteNormalizedNetwork:
        self.network_ = load_network(ctx, self.ARTIFACT)
        return self

    def forward(self, batch: ImageBatch) -> dict[str, np.ndarray]:
        if self.network_ is None:
            raise self._unfitted()
        with torch.inference_mode():
            x = network_input(batch.normalized, self.network_)
            return {"logits": self.network_(x).float().cpu().numpy()}

    def predict(
        self,
        experts: ExpertFeatures,
        own: OwnOutputs,
        mask: np.ndarray | None = None,
        *,
        calibrated: bool = False,
    ) -> MethodOutput:
        return MethodOutput(softmax_rows(own["logits"]))


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits [N, K]`` (SciPy's, numerically stable)."""
    return np.asarray(softmax(logits, axis=-1))


def concat_own(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-batch :meth:`Method.forward` outputs along the image axis."""
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def network_input(x: np.ndarray, network: torch.nn.Module) -> torch.Tensor:
    """Images ``x`` as a float32 tensor on the device of ``network``'s weights."""
    device = next(network.parameters()).device
    return torch.from_numpy(x.astype(np.float32, copy=False)).to(device)


def load_network(ctx: LoadContext, rel: str) -> SiteExpert:
    """A network of the experts' architecture with the weights ``rel`` (hash-checked), in eval
    mode, on ``ctx.device``."""
    net = build_expert(ctx.cfg, ctx.num_classes)
    try:
        net.load_state_dict(ctx.run.read_tensors(rel))
    except RuntimeError as err:
        raise ArtifactError(
            f"{ctx.run.root / rel}: weights do not fit the run's network ({err})"
        ) from err
    return net.to(ctx.device).eval()
