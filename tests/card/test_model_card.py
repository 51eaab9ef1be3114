"""The model card: built from a tiny trained and evaluated run, checked against the shipped JSON
schema, against the run's own splits and report, and for what it must never contain."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from sitefusion.card import SCHEMA_PATH, build_model_card, render_model_card, write_model_card
from sitefusion.cli.main import app
from sitefusion.errors import ArtifactError, ConfigError
from sitefusion.rundir import RunDir

pytestmark = pytest.mark.slow


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _splits(run: Path) -> list[dict[str, str]]:
    with (run / "splits.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def card(tiny_run: Path) -> dict[str, Any]:
    return build_model_card(tiny_run, tiny_run / "report")


def test_card_validates_against_the_shipped_schema(card: dict[str, Any]) -> None:
    jsonschema.validate(card, _schema())


def test_schema_refuses_a_broken_card(card: dict[str, Any]) -> None:
    schema = _schema()
    broken = copy.deepcopy(card)
    del broken["metrics"]["per_site"][0]["balanced_accuracy"]["ci95"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = copy.deepcopy(card)
    broken["limitations"].append({"kind": "feels_wrong", "site": "x", "count": 0, "text": ""})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_counts_are_those_of_the_run_splits(tiny_run: Path, card: dict[str, Any]) -> None:
    rows = _splits(tiny_run)
    by_site = {s["site"]: s for s in card["training_data"]["sites"]}
    assert set(by_site) == {r["site"] for r in rows}
    for site, entry in by_site.items():
        mine = [r for r in rows if r["site"] == site]
        assert entry["images"]["total"] == len(mine)
        assert entry["images"] == {
            **{s: sum(r["split"] == s for r in mine) for s in ("train", "val", "fusion", "test")},
            "total": len(mine),
        }
        assert entry["groups"] == len({r["group"] for r in mine})
        labels = Counter(r["label"] for r in mine)
        assert entry["class_counts"] == {c: labels[c] for c in card["factors"]["classes"]}
        assert sum(entry["class_mix"].values()) == pytest.approx(1.0, abs=1e-3)


def test_metrics_are_the_report_figures(tiny_run: Path, card: dict[str, Any]) -> None:
    metrics = json.loads((tiny_run / "report" / "metrics.json").read_text())
    fusion = metrics["methods"][card["metrics"]["method"]]
    assert [s["site"] for s in card["metrics"]["per_site"]] == list(fusion["per_site"])
    for entry in card["metrics"]["per_site"]:
        theirs = fusion["per_site"][entry["site"]]
        for name in ("balanced_accuracy", "macro_auc", "ece", "brier"):
            assert entry[name]["value"] == theirs[name]["value"]
            assert entry[name]["ci95"] == theirs[name]["ci95"]
        assert entry["n"] == theirs["n"]
    assert card["metrics"]["calibration"]["temperature"] == metrics["calibration"]["temperature"]
    assert card["model_details"]["run_id"] == metrics["run"]["run_id"]


def test_card_holds_no_image_or_group_id(tiny_run: Path, card: dict[str, Any]) -> None:
    text = json.dumps(card) + render_model_card(card)
    rows = _splits(tiny_run)
    leaked = [v for r in rows for v in (r["id"], r["group"]) if v in text]
    assert leaked == []


def test_limitations_are_computed_from_the_data(tiny_run: Path, tmp_path: Path) -> None:
    """A class removed from one site's training splits is named as never seen there."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rows = _splits(run)
    site, cls = rows[0]["site"], rows[0]["label"]
    other = next(r["label"] for r in rows if r["label"] != cls)
    for r in rows:
        if r["site"] == site and r["label"] == cls and r["split"] != "test":
            r["label"] = other
    lines = ["id,site,group,label,split"] + [
        ",".join(r[k] for k in ("id", "site", "group", "label", "split")) for r in rows
    ]
    RunDir(run).write_text("splits.csv", "\n".join(lines) + "\n")
    card = build_model_card(run)
    never = [
        (x["site"], x.get("class")) for x in card["limitations"] if x["kind"] == "class_never_seen"
    ]
    assert (site, cls) in never
    # every site of the tiny set has fewer test images than the default threshold
    few = {x["site"] for x in card["limitations"] if x["kind"] == "few_test_images"}
    assert few == {s["site"] for s in card["training_data"]["sites"]}
    assert card["metrics"] is None
    jsonschema.validate(card, _schema())
    assert "not stated here" in render_model_card(card)


def test_report_of_another_run_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    metrics = json.loads((tiny_run / "report" / "metrics.json").read_text())
    metrics["run"]["run_id"] = "someoneelse"
    (report / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ArtifactError, match=r"metrics.json: field 'run.run_id' is 'someoneelse'"):
        build_model_card(tiny_run, report)


def test_write_and_cli(tiny_run: Path, tmp_path: Path) -> None:
    md, js, card = write_model_card(tiny_run, tmp_path / "api", tiny_run / "report")
    assert json.loads(js.read_text()) == card
    text = md.read_text()
    for site in card["factors"]["sites"]:
        assert f"| {site} |" in text
    result = CliRunner().invoke(
        app,
        [
            "card",
            str(tiny_run),
            "--out",
            str(tmp_path / "cli"),
            "--report",
            str(tiny_run / "report"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "MODEL_CARD.md").exists()
    assert "with evaluation" in result.output
    bad = CliRunner().invoke(app, ["card", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1
    assert "run directory does not exist" in bad.output


def test_about_file_names_classes_and_is_strict(tiny_run: Path, tmp_path: Path) -> None:
    classes = build_model_card(tiny_run)["factors"]["classes"]
    about = tmp_path / "about.yaml"
    about.write_text(
        f"title: Tiny test model\nclass_names:\n  {classes[0]}: first finding\n"
        "out_of_scope:\n  - anything real\n"
    )
    card = build_model_card(tiny_run, about=about)
    jsonschema.validate(card, _schema())
    assert card["model_details"]["output"]["class_names"][classes[0]] == "first finding"
    assert card["intended_use"]["out_of_scope"] == ["anything real"]
    text = render_model_card(card)
    assert text.startswith("# Model card: Tiny test model")
    assert f"{classes[0]} (first finding)" in text
    about.write_text("titel: x\n")
    with pytest.raises(
        ConfigError, match=r"about.yaml: unknown field 'titel'.*did you mean 'title'"
    ):
        build_model_card(tiny_run, about=about)
    about.write_text("class_names:\n  nosuchclass: x\n")
    with pytest.raises(ConfigError, match=r"field 'class_names' names class 'nosuchclass'"):
        build_model_card(tiny_run, about=about)


def test_unseen_site_figures_and_when_they_would_mislead(tiny_run: Path, tmp_path: Path) -> None:
    from sitefusion.workflows import evaluate_run

    evaluate_run(tiny_run, tmp_path / "loso", loso=True, n_boot=10)
    metrics = json.loads((tmp_path / "loso" / "metrics.json").read_text())
    card = build_model_card(tiny_run, tmp_path / "loso")
    jsonschema.validate(card, _schema())
    unseen = card["metrics"]["unseen_site"]
    assert unseen["note"] is None
    assert {r["site"] for r in unseen["per_site"]} == set(metrics["leave_one_site_out"])
    for row in unseen["per_site"]:
        theirs = metrics["leave_one_site_out"][row["site"]]["fusion"]
        assert row["balanced_accuracy"] == theirs["balanced_accuracy"]
    assert "| Held-out site |" in render_model_card(card)

    fedavg = tmp_path / "fedavg"
    shutil.copytree(tiny_run, fedavg)
    store = RunDir(fedavg)
    text = store.read_text("config.yaml")
    assert "start: initial" in text and "fedavg: false" in text
    text = text.replace("start: initial", "start: fedavg").replace("fedavg: false", "fedavg: true")
    store.write_text("config.yaml", text)
    card = build_model_card(fedavg, tmp_path / "loso")
    assert card["metrics"]["unseen_site"]["per_site"] == []
    assert "no site was unseen" in render_model_card(card)
