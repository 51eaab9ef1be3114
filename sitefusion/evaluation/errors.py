"""Exception types of evaluation.

They subclass :class:`sitefusion.errors.SiteFusionError` (and ``ValueError``); they live here
because only this subpackage raises them.
"""

from __future__ import annotations

from sitefusion.errors import SiteFusionError

__all__ = ["EvaluationError", "MetricsSchemaError", "PredictionSetError"]


class EvaluationError(SiteFusionError, ValueError):
    """Inputs to an evaluation function have the wrong shape, type or values."""


class PredictionSetError(EvaluationError):
    """A :class:`~sitefusion.evaluation.predictions.PredictionSet` field is invalid."""


class MetricsSchemaError(EvaluationError):
    """A metrics document does not follow ``metrics_schema.json``; names the offending path."""
