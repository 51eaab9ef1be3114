"""The feature cache: every image passed once through every expert.

For images ``[N, C, *S]`` (each already normalized with its own site's normalizer) the cache holds
the pooled expert features ``[N, E, D]`` and the experts' own head logits ``[N, E, K]``; fusion,
stacking and output averaging all train and predict from it, so none of them re-runs a CNN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sitefusion.errors import ArtifactError
from sitefusion.experts import SiteExpert
from sitefusion.rundir import RunDir
from sitefusion.training.device import resolve_device

__all__ = ["ExpertFeatures", "extract_features", "load_feature_cache", "save_feature_cache"]


@dataclass(frozen=True)
class ExpertFeatures:
    """Cached outputs of E experts on N images."""

    ids: tuple[str, ...]
    features: np.ndarray  # [N, E, D] pooled features
    logits: np.ndarray  # [N, E, K] each expert's own head

    def subset(self, index: np.ndarray) -> ExpertFeatures:
        """Rows ``index`` of the cache."""
        return ExpertFeatures(
            tuple(self.ids[i] for i in index), self.features[index], self.logits[index]
        )

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors for a safetensors file (ids go to its JSON sidecar)."""
        return {
            "features": torch.from_numpy(np.ascontiguousarray(self.features)),
            "logits": torch.from_numpy(np.ascontiguousarray(self.logits)),
        }


@torch.inference_mode()
def extract_features(
    experts: Sequence[SiteExpert],
    images: np.ndarray,
    ids: Sequence[str],
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> ExpertFeatures:
    """Run every expert once on ``images`` ``[N, C, *S]``; returns ``[N, E, D]`` and ``[N, E, K]``.

    A network that appears more than once in ``experts`` (the random-feature control's untrained
    experts are one network) is run once per batch. ``device``: where the
    experts run (``training.device``); they are left on the CPU afterwards."""
    device = resolve_device(device)
    distinct = list({id(e): e for e in experts}.values())
    for e in distinct:
        e.eval().to(device)
    n = len(images)
    feats: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    for i in range(0, n, batch_size):
        xb = torch.from_numpy(images[i : i + batch_size]).to(device)
        outputs = {}
        for e in distinct:
            z = e.embed(xb)
            outputs[id(e)] = (z.float().cpu().numpy(), e.head(z).float().cpu().numpy())
        f_e = [outputs[id(e)][0] for e in experts]
        l_e = [outputs[id(e)][1] for e in experts]
        feats.append(np.stack(f_e, axis=1))
        logits.append(np.stack(l_e, axis=1))
        if on_batch is not None:
            on_batch(len(xb))
    for e in distinct:
        e.cpu()
    d = experts[0].feature_dim if experts else 0
    k = experts[0].num_classes if experts else 0
    return ExpertFeatures(
        tuple(ids),
        np.concatenate(feats) if feats else np.zeros((0, len(experts), d), np.float32),
        np.concatenate(logits) if logits else np.zeros((0, len(experts), k), np.float32),
    )


def save_feature_cache(run: RunDir, rel: str, feats: ExpertFeatures) -> None:
    """Write ``rel`` (safetensors: features, logits) and its ``.ids.json`` sidecar."""
    run.write_json(rel.replace(".safetensors", ".ids.json"), list(feats.ids))
    run.write_tensors(rel, feats.to_tensors())


def load_feature_cache(run: RunDir, rel: str) -> ExpertFeatures:
    """Read a cache written by :func:`save_feature_cache` (hash-checked, ids matching rows)."""
    t = run.read_tensors(rel)
    ids_rel = rel.replace(".safetensors", ".ids.json")
    ids = run.read_json(ids_rel)
    features, logits = t["features"].numpy(), t["logits"].numpy()
    if not len(ids) == len(features) == len(logits):
        raise ArtifactError(
            f"{run.root / ids_rel}: {len(ids)} ids for {len(features)} feature rows"
        )
    return ExpertFeatures(tuple(str(i) for i in ids), features, logits)
