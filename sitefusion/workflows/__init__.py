"""Workflows: whole jobs assembled from the layers below, over the methods registry.

- :mod:`~sitefusion.workflows.train`: a config to a finished run directory (resumable stages);
- :mod:`~sitefusion.workflows.evaluate`: every method of a run on a test set, per site, with
  bootstrap CIs, calibration and leave-one-site-out, written as a report;
- :mod:`~sitefusion.workflows.federation`: the federation (the coordinator's driver over the
  registered phases, a site's side on its own data, the Flower apps).

Batch scoring is its own package (:mod:`sitefusion.scoring`, at the layer below), which the
``score`` command calls directly: it already is that workflow.
"""

from sitefusion.workflows.evaluate import (
    evaluate_run,
    internal_test_manifest,
    loso_predictions,
    predict_manifest,
    quick_site_table,
    training_overlap,
)
from sitefusion.workflows.federation import LocalTransport, federate, federated_config, handle
from sitefusion.workflows.train import prepare_normalized, prepare_run, resolve_data, train_run

__all__ = [
    "LocalTransport",
    "evaluate_run",
    "federate",
    "federated_config",
    "handle",
    "internal_test_manifest",
    "loso_predictions",
    "predict_manifest",
    "prepare_normalized",
    "prepare_run",
    "quick_site_table",
    "resolve_data",
    "train_run",
    "training_overlap",
]
