"""evaluate_predictions: the metrics document, its schema, and its consistency."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest

from sitefusion.errors import UnknownChoiceError
from sitefusion.evaluation import (
    PredictionSet,
    apply_temperature,
    evaluate_calibration,
    evaluate_loso,
    evaluate_predictions,
    group_bootstrap_ci,
    paired_bootstrap_difference,
    simulate_predictions,
    validate_metrics,
)
from sitefusion.evaluation import metrics as m
from sitefusion.evaluation.errors import MetricsSchemaError
from sitefusion.evaluation.harness import site_seed
from sitefusion.evaluation.weighted import get_metric

METHODS = ["fusion", "pooled", "local:A", "local:B", "local:C", "output_average", "random_features"]


@pytest.fixture(scope="module")
def preds() -> PredictionSet:
    return simulate_predictions(
        np.random.default_rng(0), images_per_site=[60, 45, 30], methods=METHODS
    )


@pytest.fixture(scope="module")
def doc(preds: PredictionSet) -> dict[str, Any]:
    return evaluate_predictions(preds, n_boot=200, seed=0)


def test_document_validates_and_is_strict_json(doc: dict[str, Any]) -> None:
    validate_metrics(doc)
    text = json.dumps(doc, allow_nan=False)
    validate_metrics(json.loads(text))
    assert doc["schema_version"] == 1
    assert doc["sites"] == ["A", "B", "C"]
    assert doc["classes"] == ["benign", "malignant", "other"]
    assert list(doc["methods"]) == METHODS
    assert doc["leave_one_site_out"] == {} and doc["calibration"] == {}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema_version",), 2, "schema_version"),
        (("methods", "fusion", "per_site", "A", "balanced_accuracy", "value"), 1.7, "A"),
        (("methods", "fusion", "per_site", "A", "macro_auc", "ci95"), [0.5], "ci95"),
        (("methods", "fusion", "overall", "n"), -1, "n"),
        (("methods", "pooled", "per_site", "B", "ece"), "0.1", "ece"),
        (("unexpected",), {}, "unexpected"),
    ],
)
def test_broken_documents_fail_validation(
    doc: dict[str, Any], path: tuple[str, ...], value: Any, message: str
) -> None:
    broken = copy.deepcopy(doc)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MetricsSchemaError, match=message):
        validate_metrics(broken)


def test_missing_site_or_class_fails_the_cross_checks(doc: dict[str, Any]) -> None:
    broken = copy.deepcopy(doc)
    del broken["methods"]["pooled"]["per_site"]["C"]
    with pytest.raises(MetricsSchemaError, match=r"/methods/pooled/per_site"):
        validate_metrics(broken)
    broken = copy.deepcopy(doc)
    del broken["methods"]["fusion"]["overall"]["prevalence"]["other"]
    with pytest.raises(MetricsSchemaError, match="prevalence"):
        validate_metrics(broken)
    del broken["methods"]
    with pytest.raises(MetricsSchemaError, match="methods"):
        validate_metrics(broken)


def test_values_match_the_metric_functions(preds: PredictionSet, doc: dict[str, Any]) -> None:
    mask = preds.site == "B"
    block = doc["methods"]["pooled"]["per_site"]["B"]
    y, p = preds.labels[mask], preds.probs["pooled"][mask]
    assert block["n"] == 45
    assert block["balanced_accuracy"]["value"] == pytest.approx(m.balanced_accuracy(y, p))
    assert block["macro_auc"]["value"] == pytest.approx(m.macro_auc(y, p))
    assert block["ece"]["value"] == pytest.approx(m.expected_calibration_error(y, p, 15))
    assert block["brier"]["value"] == pytest.approx(m.brier_score(y, p))
    assert sum(block["prevalence"].values()) == pytest.approx(1.0)
    overall = doc["methods"]["pooled"]["overall"]
    assert overall["n"] == preds.n_images
    assert overall["accuracy"]["value"] == pytest.approx(
        m.accuracy(preds.labels, preds.probs["pooled"])
    )
    site_values = [doc["methods"]["pooled"]["per_site"][s]["accuracy"]["value"] for s in "ABC"]
    assert doc["methods"]["pooled"]["mean_over_sites"]["accuracy"] == pytest.approx(
        np.mean(site_values)
    )
    for cell in (block["balanced_accuracy"], block["macro_auc"], block["brier"]):
        low, high = cell["ci95"]
        assert low <= cell["value"] <= high


def test_site_intervals_reproduce_with_group_bootstrap_ci(
    preds: PredictionSet, doc: dict[str, Any]
) -> None:
    i, site = 2, "C"
    mask = preds.site == site
    res = group_bootstrap_ci(
        get_metric("macro_auc"),
        preds.labels[mask],
        preds.probs["fusion"][mask],
        preds.group[mask],
        n_boot=200,
        seed=site_seed(0, i),
    )
    assert doc["methods"]["fusion"]["per_site"][site]["macro_auc"]["ci95"] == pytest.approx(
        list(res.ci)
    )
    diff = paired_bootstrap_difference(
        get_metric("balanced_accuracy"),
        preds.labels[mask],
        preds.probs["fusion"][mask],
        preds.probs["pooled"][mask],
        preds.group[mask],
        n_boot=200,
        seed=site_seed(0, i),
    )
    cell = doc["paired"]["pooled"][site]["balanced_accuracy"]
    assert cell["value"] == pytest.approx(diff.value)
    assert cell["ci95"] == pytest.approx(list(diff.ci))


def test_paired_margins_attention_and_cross_site(doc: dict[str, Any]) -> None:
    assert set(doc["paired"]) == set(METHODS) - {"fusion"}
    assert set(doc["paired"]["pooled"]) == {"A", "B", "C"}
    margin = doc["margins"]["random_features"]
    fusion_mean = doc["methods"]["fusion"]["mean_over_sites"]["balanced_accuracy"]
    rf_mean = doc["methods"]["random_features"]["mean_over_sites"]["balanced_accuracy"]
    assert margin["value"] == pytest.approx(fusion_mean - rf_mean)
    assert margin["ci95"][0] > 0  # simulated random features are near chance
    assert list(doc["attention"]) == ["fusion"]
    weights = doc["attention"]["fusion"]["A"]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert max(weights, key=weights.__getitem__) == "A"  # simulated: own expert dominates
    assert list(doc["local_cross_site"]) == ["A", "B", "C"]
    assert (
        doc["local_cross_site"]["B"]["C"]
        == doc["methods"]["local:B"]["per_site"]["C"]["balanced_accuracy"]
    )


def test_deterministic_and_seed_dependent(preds: PredictionSet, doc: dict[str, Any]) -> None:
    again = evaluate_predictions(preds, n_boot=200, seed=0)
    assert again == doc
    other = evaluate_predictions(preds, n_boot=200, seed=1)
    a = other["methods"]["fusion"]["per_site"]["A"]["balanced_accuracy"]
    b = doc["methods"]["fusion"]["per_site"]["A"]["balanced_accuracy"]
    assert a["value"] == b["value"] and a["ci95"] != b["ci95"]


def test_missing_reference_leaves_comparisons_empty(preds: PredictionSet) -> None:
    sub = PredictionSet(
        classes=preds.classes,
        sites=preds.sites,
        experts=preds.experts,
        ids=preds.ids,
        labels=preds.labels,
        site=preds.site,
        group=preds.group,
        probs={"pooled": preds.probs["pooled"], "stacking": preds.probs["pooled"]},
        attention={},
    )
    out = evaluate_predictions(sub, n_boot=20)
    assert out["paired"] == {} and out["margins"] == {}
    validate_metrics(out)
    with pytest.raises(UnknownChoiceError, match="did you mean 'pooled'"):
        evaluate_predictions(sub, n_boot=20, reference="poold")


def test_site_without_images_and_single_class_site() -> None:
    rng = np.random.default_rng(3)
    n = 40
    y = np.r_[rng.integers(0, 2, 30), np.zeros(10, dtype=int)]  # site B: class 0 only
    p1 = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, n), 0.01, 0.99)
    probs = np.column_stack([1 - p1, p1])
    preds = PredictionSet(
        classes=("neg", "pos"),
        sites=("A", "B", "C"),  # C has no test image
        experts=("A", "B", "C"),
        ids=np.array([f"i{i}" for i in range(n)]),
        labels=y,
        site=np.array(["A"] * 30 + ["B"] * 10),
        group=np.array([f"g{i // 2}" for i in range(n)]),
        probs={"fusion": probs, "pooled": probs.copy()},
        attention={},
    )
    doc = evaluate_predictions(preds, n_boot=50)
    validate_metrics(doc)
    fusion = doc["methods"]["fusion"]
    assert fusion["per_site"]["C"]["n"] == 0
    assert fusion["per_site"]["C"]["balanced_accuracy"] == {"value": None, "ci95": [None, None]}
    assert fusion["per_site"]["B"]["macro_auc"]["value"] is None
    assert fusion["per_site"]["B"]["per_class_auc"] == {"neg": None, "pos": None}
    assert fusion["per_site"]["B"]["per_class_sensitivity"]["pos"] is None
    # two-class tasks carry AUC, sensitivity and specificity; the positive class is "pos"
    assert set(fusion["overall"]) >= {"auc", "sensitivity", "specificity"}
    assert doc["settings"]["positive_class"] == "pos"
    assert fusion["per_site"]["A"]["auc"]["value"] == pytest.approx(
        fusion["per_site"]["A"]["macro_auc"]["value"]
    )
    # mean over sites ignores the undefined sites
    assert fusion["mean_over_sites"]["macro_auc"] == pytest.approx(
        fusion["per_site"]["A"]["macro_auc"]["value"]
    )


def test_calibration_section(preds: PredictionSet, doc: dict[str, Any]) -> None:
    cal = evaluate_calibration(preds, temperature=2.0, fitted_on="validation split")
    assert cal["method"] == "fusion" and cal["temperature"] == 2.0
    assert cal["fitted_on"] == "validation split"
    assert list(cal["per_site"]) == ["A", "B", "C", "overall"]
    mask = preds.site == "B"
    y, p = preds.labels[mask], preds.probs["fusion"][mask]
    scaled = apply_temperature(np.log(p), 2.0)
    b = cal["per_site"]["B"]
    assert b["ece_before"] == pytest.approx(m.expected_calibration_error(y, p))
    assert b["ece_after"] == pytest.approx(m.expected_calibration_error(y, scaled))
    assert b["brier_after"] == pytest.approx(m.brier_score(y, scaled))
    validate_metrics({**doc, "calibration": cal})
    with pytest.raises(UnknownChoiceError):
        evaluate_calibration(preds, 1.0, method="stacking")


def test_loso_blocks(preds: PredictionSet, doc: dict[str, Any]) -> None:
    loso = evaluate_loso({"A": preds, "C": preds}, n_boot=50)
    assert list(loso) == ["A", "C"]
    assert loso["C"]["fusion"]["n"] == 30
    validate_metrics({**doc, "leave_one_site_out": loso})
    with pytest.raises(UnknownChoiceError):
        evaluate_loso({"Z": preds}, n_boot=10)


def test_nan_never_reaches_the_document(doc: dict[str, Any]) -> None:
    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, float):
            assert math.isfinite(x)

    walk(doc)
