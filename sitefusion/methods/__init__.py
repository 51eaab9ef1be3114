"""Methods: every way of predicting from a run's site experts, one class each behind one
protocol (:class:`Method`: ``fit`` / ``load`` / ``forward`` / ``predict``), and a registry.

- :mod:`~sitefusion.methods.fusion`: the fusion heads (``fusion``, ``fusion_concat``,
  ``fusion_attention``), the product one fine-tuned end to end when configured;
- :mod:`~sitefusion.methods.random_features`: the fusion on untrained experts (a control);
- :mod:`~sitefusion.methods.pooled`: one network on all sites pooled;
- :mod:`~sitefusion.methods.local`: each site's expert alone (``local:<site>``);
- :mod:`~sitefusion.methods.output_average`, :mod:`~sitefusion.methods.weight_average`,
  :mod:`~sitefusion.methods.stacking`: the classical ensembles;
- :mod:`~sitefusion.methods.loaded_run`: a finished run with every method it holds;
- :mod:`~sitefusion.methods.registry`: each family declared in
  :mod:`sitefusion.evaluation.method_families` bound to its class, and the methods a config trains.
"""

from sitefusion.methods.base import (
    ImageBatch,
    LoadContext,
    Method,
    MethodOutput,
    load_network,
    softmax_rows,
)
from sitefusion.methods.fusion import FUSION_METHOD_NAMES, FusionMethod, fit_head
from sitefusion.methods.loaded_run import LoadedRun, RunPredictions
from sitefusion.methods.local import LocalExpert, local_name
from sitefusion.methods.output_average import OutputAverage
from sitefusion.methods.pooled import PooledMethod
from sitefusion.methods.random_features import RandomFeaturesControl
from sitefusion.methods.registry import METHOD_CLASSES, configured_methods
from sitefusion.methods.stacking import StackingMethod, StackingModel, fit_stacking
from sitefusion.methods.weight_average import WeightAverage

__all__ = [
    "FUSION_METHOD_NAMES",
    "METHOD_CLASSES",
    "FusionMethod",
    "ImageBatch",
    "LoadContext",
    "LoadedRun",
    "LocalExpert",
    "Method",
    "MethodOutput",
    "OutputAverage",
    "PooledMethod",
    "RandomFeaturesControl",
    "RunPredictions",
    "StackingMethod",
    "StackingModel",
    "WeightAverage",
    "configured_methods",
    "fit_head",
    "fit_stacking",
    "load_network",
    "local_name",
    "softmax_rows",
]
