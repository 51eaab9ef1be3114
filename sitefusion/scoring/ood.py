"""Out-of-distribution score: how far an image's expert features lie from the fusion split's.

The feature of an image is the mean over experts of its pooled expert features (``[E, D] ->
[D]``). The reference is the run's fusion split (cached in ``features/trained.safetensors``):
features are standardised per dimension, a Ledoit-Wolf shrinkage covariance is fitted, and the
score is the Mahalanobis distance. The flag threshold is the ``quantile`` of the fusion split's
own distances (in-sample, so held-out in-distribution images exceed it somewhat more often than
``1 - quantile``).

Why the mean over experts and not their concatenation: the fusion split holds about a fifth of
each site's images (often fewer than ``E * D`` rows), and the mean keeps the covariance
estimate well conditioned while every expert still contributes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sitefusion.data import load_splits
from sitefusion.errors import ArtifactError, NotFittedError, SiteFusionError
from sitefusion.training.features import load_feature_cache

__all__ = ["OOD_REFERENCE", "MahalanobisOOD", "fusion_split_features", "run_ood"]


class MahalanobisOOD:
    """Mahalanobis distance to a reference feature set (scikit-learn estimator contract).

    Args:
        quantile: the reference distances' quantile used as threshold (``0.5 < q < 1``).

    Fitted attributes: ``mean_`` ``[D]``, ``scale_`` ``[D]``, ``precision_`` ``[D, D]``,
    ``threshold_``, ``reference_scores_`` ``[N]``.
    """

    def __init__(self, quantile: float = 0.99) -> None:
        if not 0.5 < float(quantile) < 1.0:
            raise SiteFusionError(
                f"MahalanobisOOD: quantile is {quantile!r}; expected a value between 0.5 and 1"
            )
        self.quantile = float(quantile)

    def fit(self, features: np.ndarray) -> MahalanobisOOD:
        """Fit on reference features ``[N, D]`` (or ``[N, E, D]``, averaged over experts)."""
        from sklearn.covariance import LedoitWolf

        x = _pool(features)
        if len(x) < 2:
            raise SiteFusionError(
                f"MahalanobisOOD: {len(x)} reference row(s); at least 2 are needed"
            )
        self.mean_ = x.mean(0)
        scale = x.std(0)
        self.scale_ = np.where(scale > 1e-8, scale, 1.0)
        z = (x - self.mean_) / self.scale_
        self.precision_ = np.asarray(LedoitWolf(assume_centered=True).fit(z).precision_)
        self.reference_scores_ = self.score(features)
        self.threshold_ = float(np.quantile(self.reference_scores_, self.quantile))
        return self

    def fit_moments(self, count: float, total: np.ndarray, outer: np.ndarray) -> MahalanobisOOD:
        """Fit from aggregates of the reference rows ``x [N, D]`` (the experts' mean features):
        ``count`` = N, ``total`` = sum of ``x`` ``[D]``, ``outer`` = sum of ``x x^T``
        ``[D, D]`` — what a federation's sites can send without sending any row.

        Ledoit-Wolf's shrinkage needs the rows themselves; from the sample covariance alone the
        Oracle Approximating Shrinkage (Chen et al., IEEE TSP 2010, as scikit-learn's ``oas``)
        is used instead. The threshold is not set here (:meth:`set_threshold`).
        """
        n = float(count)
        if n < 2:
            raise SiteFusionError(
                f"MahalanobisOOD: {n:.0f} reference row(s); at least 2 are needed"
            )
        mean = np.asarray(total, np.float64) / n
        cov = np.asarray(outer, np.float64) / n - np.outer(mean, mean)
        scale = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        self.mean_ = mean
        self.scale_ = np.where(scale > 1e-8, scale, 1.0)
        s = cov / np.outer(self.scale_, self.scale_)
        p = len(s)
        mu = float(np.trace(s)) / p
        alpha = float(np.mean(s**2))
        den = (n + 1.0) * (alpha - mu**2 / p)
        shrinkage = 1.0 if den == 0 else min((alpha + mu**2) / den, 1.0)
        shrunk = (1.0 - shrinkage) * s + shrinkage * mu * np.eye(p)
        self.precision_ = np.linalg.pinv(shrunk)
        self.reference_scores_ = np.zeros(int(n))
        return self

    def set_threshold(self, edges: np.ndarray, counts: np.ndarray) -> MahalanobisOOD:
        """Set ``threshold_`` to the ``quantile`` of the reference distances given as a
        histogram (``counts`` per bin between ``edges``), the upper edge of the bin it falls in."""
        counts = np.asarray(counts, np.float64)
        cum = np.cumsum(counts)
        if cum[-1] <= 0:
            raise SiteFusionError("MahalanobisOOD: empty histogram of reference distances")
        k = int(np.searchsorted(cum, self.quantile * cum[-1]))
        self.threshold_ = float(np.asarray(edges, np.float64)[min(k + 1, len(edges) - 1)])
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The fitted reference as arrays (``scoring/ood_reference.safetensors``)."""
        self._require_fitted()
        return {
            "mean": self.mean_,
            "scale": self.scale_,
            "precision": np.asarray(self.precision_),
            "threshold": np.array([self.threshold_]),
            "count": np.array([float(len(self.reference_scores_))]),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], quantile: float) -> MahalanobisOOD:
        """A fitted instance from :meth:`state`'s arrays."""
        ood = cls(quantile)
        ood.mean_ = np.asarray(state["mean"], np.float64)
        ood.scale_ = np.asarray(state["scale"], np.float64)
        ood.precision_ = np.asarray(state["precision"], np.float64)
        ood.threshold_ = float(np.asarray(state["threshold"]).ravel()[0])
        ood.reference_scores_ = np.zeros(int(np.asarray(state["count"]).ravel()[0]))
        return ood

    def _require_fitted(self) -> None:
        if not hasattr(self, "precision_"):
            raise NotFittedError(self)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distances ``[N]`` of features ``[N, D]`` or ``[N, E, D]``.

        Each row is computed on its own (vector-matrix products), so a row's distance does not
        depend on which other rows share the call: a resumed batch gives the same numbers.
        """
        self._require_fitted()
        z = (_pool(features) - self.mean_) / self.scale_
        precision = self.precision_
        return np.array(
            [float(np.sqrt(max(float(row @ precision @ row), 0.0))) for row in z], np.float64
        )

    def flag(self, features: np.ndarray) -> np.ndarray:
        """``score > threshold_`` as booleans ``[N]``."""
        self._require_fitted()
        return self.score(features) > self.threshold_

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary: quantile, threshold, reference size and dimension."""
        self._require_fitted()
        return {
            "quantile": self.quantile,
            "threshold": self.threshold_,
            "n_reference": len(self.reference_scores_),
            "dim": len(self.mean_),
        }


def _pool(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 3:
        x = x.mean(1)
    if x.ndim != 2:
        raise SiteFusionError(
            f"MahalanobisOOD: features have shape {list(x.shape)}; expected [N, D] or [N, E, D]"
        )
    return x


OOD_REFERENCE = "scoring/ood_reference.safetensors"
"""A run's stored OOD reference (federated runs, whose fusion-split features stay at the sites)."""


def run_ood(run: Any, quantile: float) -> MahalanobisOOD:
    """The OOD reference of a loaded run: its stored reference if it has one, else fitted on its
    cached fusion-split features."""
    if run.run.has(OOD_REFERENCE):
        state = {k: v.numpy() for k, v in run.run.read_tensors(OOD_REFERENCE).items()}
        return MahalanobisOOD.from_state(state, quantile)
    return MahalanobisOOD(quantile).fit(fusion_split_features(run))


def fusion_split_features(run: Any) -> np.ndarray:
    """The fusion split's cached expert features ``[N, E, D]`` of a loaded run.

    Reads ``features/trained.safetensors`` (rows named by ``features/trained.ids.json``) and
    ``splits.csv``, all hash-checked by the run directory.

    Raises:
        ArtifactError: the cache or the splits are missing, or no row is in the fusion split.
    """
    rundir = run.run
    cache = load_feature_cache(rundir, "features/trained.safetensors")
    splits = load_splits(rundir.verify("splits.csv"))
    features = cache.features
    rows = [i for i, rid in enumerate(cache.ids) if splits.get(rid) == "fusion"]
    if not rows:
        raise ArtifactError(
            f"{rundir.root / 'features/trained.safetensors'}: no cached row is in the fusion split"
        )
    return np.asarray(features[rows], dtype=np.float64)
