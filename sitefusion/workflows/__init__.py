"""Workflows: whole jobs assembled from the layers below, over the methods registry.

- :mod:`~sitefusion.workflows.train`: a config to a finished run directory (resumable stages);
- :mod:`~sitefusion.workflows.evaluate`: every method of a run on a test set, per site, with
  bootstrap CIs, calibration and leave-one-site-out, written as a report;
- :mod:`~sitefusion.workflows.federate`: the coordinator of a federated run (phases, rounds,
  deadlines, the run directory), :mod:`~sitefusion.workflows.federated_site` a site's phases on
  its own data, :mod:`~sitefusion.workflows.flower_apps` the Flower apps around both (imported
  by Flower only: it needs ``flwr``).

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
from sitefusion.workflows.federate import LocalTransport, federate, federated_config
from sitefusion.workflows.federated_site import handle
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
