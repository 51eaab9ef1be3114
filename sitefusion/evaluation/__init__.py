"""Evaluation of predictions: pure metrics, group bootstrap, calibration, per-site documents.

Works from a :class:`PredictionSet` (every method's probabilities on the test images) and
produces the metrics document (:func:`evaluate_predictions`) that :mod:`sitefusion.reporting`
renders. Metrics are pure functions; evaluation groups images by site and calls them. The method
names it knows are declared once, per family, in :mod:`.method_families`.
"""

from sitefusion.evaluation.bootstrap import (
    BootstrapResult,
    group_bootstrap_ci,
    group_bootstrap_weights,
    paired_bootstrap_difference,
    percentile_ci,
    resampled_values,
)
from sitefusion.evaluation.calibration import (
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from sitefusion.evaluation.curves import (
    ReliabilityBins,
    RocCurve,
    confusion,
    macro_roc_curve,
    reliability_bins,
    roc_curve_ovr,
)
from sitefusion.evaluation.errors import EvaluationError, MetricsSchemaError, PredictionSetError
from sitefusion.evaluation.harness import (
    SCHEMA_VERSION,
    evaluate_calibration,
    evaluate_loso,
    evaluate_predictions,
)
from sitefusion.evaluation.method_families import (
    METHOD_FAMILIES,
    MethodFamily,
    MethodVariant,
    family_of_method,
    method_family,
)
from sitefusion.evaluation.metrics import (
    accuracy,
    balanced_accuracy,
    binary_metrics,
    brier_score,
    expected_calibration_error,
    macro_auc,
    per_class_auc,
    per_class_sensitivity,
    predicted_labels,
    prevalence,
)
from sitefusion.evaluation.predictions import PredictionSet
from sitefusion.evaluation.schema import load_metrics_schema, validate_metrics
from sitefusion.evaluation.synthetic import simulate_predictions
from sitefusion.evaluation.weighted import Metric, get_metric, metric_names

__all__ = [
    "METHOD_FAMILIES",
    "SCHEMA_VERSION",
    "BootstrapResult",
    "EvaluationError",
    "MethodFamily",
    "MethodVariant",
    "Metric",
    "MetricsSchemaError",
    "PredictionSet",
    "PredictionSetError",
    "ReliabilityBins",
    "RocCurve",
    "accuracy",
    "apply_temperature",
    "balanced_accuracy",
    "binary_metrics",
    "brier_score",
    "confusion",
    "evaluate_calibration",
    "evaluate_loso",
    "evaluate_predictions",
    "expected_calibration_error",
    "family_of_method",
    "fit_temperature",
    "get_metric",
    "group_bootstrap_ci",
    "group_bootstrap_weights",
    "load_metrics_schema",
    "macro_auc",
    "macro_roc_curve",
    "method_family",
    "metric_names",
    "negative_log_likelihood",
    "paired_bootstrap_difference",
    "per_class_auc",
    "per_class_sensitivity",
    "percentile_ci",
    "predicted_labels",
    "prevalence",
    "reliability_bins",
    "resampled_values",
    "roc_curve_ovr",
    "simulate_predictions",
    "validate_metrics",
]
