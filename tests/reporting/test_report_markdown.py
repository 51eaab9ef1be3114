"""The Markdown report and its plain-language summary."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sitefusion.evaluation import evaluate_predictions, simulate_predictions
from sitefusion.reporting import render_markdown, summary_points, verdict, write_report

CELL = re.compile(r"\d\.\d{3} \[\d\.\d{2}, \d\.\d{2}\]")


def test_per_site_tables_and_cells(doc: dict[str, Any]) -> None:
    md = render_markdown(doc)
    assert md.startswith("# Cross-site evaluation report")
    assert "## Balanced accuracy per site" in md
    assert "## Macro AUC (one-vs-rest) per site" in md
    assert "## Class prevalence per site" in md
    assert "| method | A | B | C | all images | mean over sites |" in md
    fusion_row = next(line for line in md.splitlines() if line.startswith("| fusion |"))
    cells = fusion_row.split(" | ")[1:4]
    assert all(CELL.fullmatch(c) for c in cells), fusion_row
    value = doc["methods"]["fusion"]["per_site"]["A"]["balanced_accuracy"]["value"]
    assert f"{value:.3f} [" in fusion_row
    # the prevalence table: one row per site, percentages
    prevalence = doc["methods"]["fusion"]["per_site"]["B"]["prevalence"]["benign"]
    assert f"| B | 45 | {100 * prevalence:.1f}% |" in md
    assert "## Leave-one-site-out" in md and "A held out" in md
    assert "## Temperature scaling of fusion (T = 1.80, fitted on validation split)" in md
    assert "## Local experts across sites: balanced accuracy" in md


def test_summary_states_margins_in_words(doc: dict[str, Any]) -> None:
    points = summary_points(doc)
    text = " ".join(points)
    margin = doc["margins"]["random_features"]
    assert f"{margin['value']:+.3f}" in text
    assert "random-features control" in text
    assert "Compared with pooled" in text
    assert "Differences inside the 95% confidence intervals are noise" in text
    assert render_markdown(doc).count("random-features control") == 1


@pytest.mark.parametrize(
    ("ci", "says"),
    [
        ([0.02, 0.18], "this margin is what training the site experts buys"),
        ([-0.01, 0.18], "this test set cannot show that the trained experts add anything"),
        ([-0.18, -0.02], "the fusion does worse with the trained experts than with untrained"),
    ],
)
def test_random_features_margin_is_read_by_its_interval(
    doc: dict[str, Any], ci: list[float], says: str
) -> None:
    other = copy.deepcopy(doc)
    other["margins"]["random_features"] = {"value": sum(ci) / 2, "ci95": ci}
    (point,) = [p for p in summary_points(other) if "random-features control" in p]
    assert says in point
    # exactly one of the three readings
    assert sum(t in point for t in ("buys", "cannot show", "does worse")) == 1


def test_verdicts() -> None:
    assert verdict({"value": 0.1, "ci95": [0.02, 0.2]}) == "better"
    assert verdict({"value": -0.1, "ci95": [-0.2, -0.01]}) == "worse"
    assert verdict({"value": 0.01, "ci95": [-0.02, 0.05]}) == "noise"
    assert verdict({"value": -0.05, "ci95": [-0.09, -0.01]}, lower_is_better=True) == "better"
    assert verdict({"value": None, "ci95": [None, None]}) == "undefined"
    assert verdict(None) == "undefined"


def test_small_and_undefined_sites_get_caveats(doc: dict[str, Any]) -> None:
    broken = copy.deepcopy(doc)
    for method in broken["methods"].values():
        method["per_site"]["C"]["macro_auc"] = {"value": None, "ci95": [None, None]}
    text = " ".join(summary_points(broken))
    assert "Few test images at B (45), C (30)" in text
    assert "Macro AUC is undefined (n/a) at C" in text
    assert "| n/a |" in render_markdown(broken)


def test_a_class_never_recognised_at_a_site_is_called_out(doc: dict[str, Any]) -> None:
    missed = copy.deepcopy(doc)
    block = missed["methods"]["fusion"]["per_site"]["A"]
    cls = max(block["prevalence"], key=block["prevalence"].get)
    count = round(block["prevalence"][cls] * block["n"])
    assert count >= 5
    assert not any("recognises none" in p for p in summary_points(missed))
    block["per_class_sensitivity"][cls] = 0.0
    missed["methods"]["pooled"]["per_site"]["A"]["per_class_sensitivity"][cls] = 0.6
    text = " ".join(summary_points(missed))
    assert f"Fusion recognises none of the {count} {cls} images at A" in text
    assert f"(pooled: {round(0.6 * count)} of {count})" in text


def test_without_reference_no_comparisons(doc: dict[str, Any]) -> None:
    other = copy.deepcopy(doc)
    other["methods"].pop("fusion")
    other["paired"], other["margins"], other["calibration"] = {}, {}, {}
    other["settings"]["reference"] = "fusion"
    md = render_markdown(other)
    assert "There are no fusion predictions" in md
    assert "minus each other method" not in md


def test_two_class_report_has_binary_tables(tmp_path: Path) -> None:
    preds = simulate_predictions(
        np.random.default_rng(2),
        sites=("north", "south"),
        classes=("benign", "malignant"),
        images_per_site=40,
        methods=["fusion", "pooled", "local:north", "local:south", "random_features"],
    )
    paths = write_report(evaluate_predictions(preds, n_boot=50), preds, tmp_path)
    md = paths.markdown.read_text()
    for title in ("## Sensitivity per site", "## Specificity per site"):
        assert title in md
    assert "## AUC per site" not in md  # equals the macro AUC table for two classes
    assert "With two classes this is the AUC of the positive class." in md
    assert "| positive class | malignant |" in md
    assert md.count("Fusion reaches a balanced accuracy") == 1
    assert paths.html.read_text().count("data:image/png;base64,") == 7


def test_a_temperature_not_applied_is_said_with_its_reason(doc: dict[str, Any]) -> None:
    """A run whose temperature fit ran onto a bound stores T = 1 and a note; the summary and the
    calibration table give the reason instead of claiming a change, and the document validates."""
    from sitefusion.evaluation.schema import validate_metrics

    other = copy.deepcopy(doc)
    other["calibration"]["temperature"] = 1.0
    other["calibration"]["note"] = "the held-out images are classified without error"
    validate_metrics(other)
    text = " ".join(summary_points(other))
    assert "No temperature scaling of fusion: the held-out images are classified" in text
    assert "Temperature scaling (T =" not in text
    md = render_markdown(other)
    assert "No temperature applied: the held-out images are classified" in md
    assert "Temperature scaling (T = 1.80" in " ".join(summary_points(doc))  # unchanged without
