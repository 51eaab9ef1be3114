"""Stacking: scikit-learn's LogisticRegression on the concatenated expert outputs.

The fitted model is stored as JSON (standardisation statistics, ``coef_``, ``intercept_``,
``classes_``) and rebuilt into a real ``LogisticRegression`` for prediction, so scikit-learn
computes the probabilities and no pickle is ever written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from sitefusion.errors import ArtifactError
from sitefusion.evaluation.method_families import STACKING
from sitefusion.methods.base import LoadContext, Method, MethodOutput, OwnOutputs
from sitefusion.rundir import RunDir
from sitefusion.training.context import TrainContext
from sitefusion.training.features import ExpertFeatures

__all__ = ["StackingMethod", "StackingModel", "fit_stacking"]


def _design(features: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """``[N, E, D]`` and ``[N, E, K]`` -> ``[N, E * (D + K)]``."""
    return np.concatenate([features, logits], axis=2).reshape(len(features), -1)


class StackingModel:
    """A fitted scaler + logistic regression over concatenated expert outputs."""

    def __init__(self, scaler: StandardScaler, model: LogisticRegression, num_classes: int) -> None:
        self.scaler = scaler
        self.model = model
        self.num_classes = num_classes

    def predict_proba(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, K]`` over all run classes (classes unseen in fitting get 0)."""
        p = self.model.predict_proba(self.scaler.transform(_design(features, logits)))
        out = np.zeros((len(p), self.num_classes))
        out[:, self.model.classes_.astype(int)] = p
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-safe parameters."""
        return {
            "kind": "stacking_logistic_regression",
            "version": 1,
            "num_classes": self.num_classes,
            "scaler_mean": self.scaler.mean_.tolist(),
            "scaler_scale": self.scaler.scale_.tolist(),
            "classes": self.model.classes_.tolist(),
            "coef": self.model.coef_.tolist(),
            "intercept": self.model.intercept_.tolist(),
            "C": self.model.C,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "stacking.json") -> StackingModel:
        """Rebuild from :meth:`to_json` output."""
        try:
            if data.get("kind") != "stacking_logistic_regression" or data.get("version") != 1:
                raise ArtifactError(f"{source}: not a version-1 stacking model")
            scaler = StandardScaler()
            scaler.mean_ = np.asarray(data["scaler_mean"], dtype=np.float64)
            scaler.scale_ = np.asarray(data["scaler_scale"], dtype=np.float64)
            scaler.var_ = scaler.scale_**2
            scaler.n_features_in_ = len(scaler.mean_)
            model = LogisticRegression(C=float(data["C"]))
            model.classes_ = np.asarray(data["classes"])
            model.coef_ = np.asarray(data["coef"], dtype=np.float64)
            model.intercept_ = np.asarray(data["intercept"], dtype=np.float64)
            model.n_features_in_ = model.coef_.shape[1]
            return cls(scaler, model, int(data["num_classes"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"{source}: malformed stacking model ({err})") from err


def fit_stacking(
    features: np.ndarray, logits: np.ndarray, labels: np.ndarray, num_classes: int, C: float = 0.1
) -> StackingModel:
    """Fit on fusion-split features ``[N, E, D]``, logits ``[N, E, K]`` and labels ``[N]``."""
    x = _design(features, logits)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=C, max_iter=3000, class_weight="balanced")
    model.fit(scaler.transform(x), labels)
    return StackingModel(scaler, model, num_classes)


_REL = "baselines/stacking.json"


class StackingMethod(Method):
    """Stacking as a method: fitted on the fusion split only (it cannot mask experts, so it
    cannot use the cross-fitted rows), predicting only when every expert is present."""

    name = STACKING.name

    def __init__(self) -> None:
        self.model_: StackingModel | None = None

    def is_trained(self, run: RunDir) -> bool:
        return run.has(_REL)

    def fit(self, ctx: TrainContext) -> None:
        if self.is_trained(ctx.run):
            return
        rows, feats = ctx.require_rows(), ctx.require_features()
        f, lg = feats.features[rows.positions], feats.logits[rows.positions]
        only = rows.presence.all(1)
        ctx.run.write_json(
            _REL, fit_stacking(f[only], lg[only], rows.labels[only], ctx.num_classes).to_json()
        )
        ctx.log("stacking (LogisticRegression) fitted on the fusion split")

    def load(self, ctx: LoadContext) -> StackingMethod:
        self.model_ = StackingModel.from_json(ctx.run.read_json(_REL), str(ctx.run.root / _REL))
        return self

    def predict(
        self,
        experts: ExpertFeatures,
        own: OwnOutputs,
        mask: np.ndarray | None = None,
        *,
        calibrated: bool = False,
    ) -> MethodOutput | None:
        if self.model_ is None:
            raise self._unfitted()
        if mask is not None:
            return None
        return MethodOutput(self.model_.predict_proba(experts.features, experts.logits))
