"""Hostile and careless inputs to the commands (issue 31, classes 3, 5, 10): each ends in one
line that names the file, the row or the field, never in a traceback or a silent default."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sitefusion.cli.main import app
from sitefusion.config import Config, config_to_dict
from sitefusion.federated.deploy import free_port

runner = CliRunner()


def write_config(cfg: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def one_line_failure(result: object, *words: str) -> str:
    """The output of a clean failure: exit 1 through typer, not an exception."""
    output: str = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # type: ignore[attr-defined]
    flat = " ".join(output.split())
    for word in words:
        assert word in flat, flat
    return flat


def manifest_copy(synthetic: Path, tmp_path: Path, extra: list[list[str]]) -> Path:
    """The synthetic set's manifest with ``extra`` rows appended (its images stay where they are:
    the config's ``data.root``)."""
    target = tmp_path / "manifest.csv"
    shutil.copy(synthetic, target)
    with target.open("a", newline="") as fh:
        csv.writer(fh).writerows(extra)
    return target


def test_prepare_with_a_one_image_site_names_the_site_and_manifest(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Callable[..., Config]
) -> None:
    # a label cell with an unquoted comma shifts the row: its site becomes a new one-image site
    manifest = manifest_copy(
        synthetic_2d,
        tmp_path,
        [["extra_0", "images/site_a/img_00000.png", "class_0", "site_z", "g_extra"]],
    )
    raw = config_to_dict(tiny_config(synthetic_2d))
    raw["data"]["manifest"] = str(manifest)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["prepare", str(cfg), "--out", str(tmp_path / "run")])
    flat = one_line_failure(result, "site_z", str(manifest))
    assert "row 182" in flat  # the row of its only image


def test_the_largest_seed_prepares(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Callable[..., Config]
) -> None:
    cfg = write_config(tiny_config(synthetic_2d, seed=2**32 - 1), tmp_path / "c.yaml")
    result = runner.invoke(
        app, ["prepare", str(cfg), "--out", str(tmp_path / "run"), "--set", "split.seed=4294967295"]
    )
    assert result.exit_code == 0, (result.output, result.exception)


def test_an_empty_config_file_is_refused(tmp_path: Path) -> None:
    for body in ("", "\n# only a comment\n", "---\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(body)
        result = runner.invoke(app, ["config", str(empty)])
        one_line_failure(result, str(empty), "empty")


def test_score_out_inside_the_run_and_evaluate_out_among_its_artifacts_are_refused(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "experts").mkdir(parents=True)
    (run / "experts" / "a.json").write_text("{}")
    digest = "0" * 64
    (run / "manifest.json").write_text(
        '{"version": 1, "artifacts": {"experts/a.json": "' + digest + '"}}'
    )
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    for out in (run, run / "scores", run / "." / "sub" / ".."):
        result = runner.invoke(app, ["score", str(run), str(image), "--out", str(out)])
        one_line_failure(result, "inside the run directory", str(run))
        assert not (run / "scores").exists()
    for out in (run, run / "." / "sub" / ".."):
        result = runner.invoke(app, ["evaluate", str(run), "--out", str(out)])
        one_line_failure(result, "inside the run directory", str(run))
    result = runner.invoke(app, ["evaluate", str(run), "--out", str(run / "experts" / "r")])
    one_line_failure(result, "among the run's own artifacts", str(run / "experts"))
    assert sorted(p.name for p in run.iterdir()) == ["experts", "manifest.json"]


def test_federate_reports_an_unreachable_superlink(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    address = f"127.0.0.1:{free_port()}"
    result = runner.invoke(
        app,
        [
            "federate",
            str(root / "configs" / "demo-federated.yaml"),
            "--out",
            str(tmp_path / "fed"),
            "--superlink",
            address,
        ],
    )
    flat = one_line_failure(result, address, "unreachable")
    assert "None" not in flat


def test_classes_taken_from_the_labels_are_said(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Callable[..., Config]
) -> None:
    cfg = write_config(tiny_config(synthetic_2d), tmp_path / "c.yaml")
    result = runner.invoke(app, ["prepare", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "data.classes is not set" in flat and "class_0, class_1, class_2" in flat
    named = write_config(
        tiny_config(synthetic_2d, data__classes=["class_0", "class_1", "class_2"]),
        tmp_path / "named.yaml",
    )
    result = runner.invoke(app, ["prepare", str(named), "--out", str(tmp_path / "run2")])
    assert result.exit_code == 0 and "data.classes is not set" not in result.output


def test_seeds_outside_numpys_range_are_refused_by_config(tmp_path: Path) -> None:
    # refused since the pydantic schema (issue 28); kept here so that train never sees them
    for seed in ("99999999999999999999999", "-1", "4294967296"):
        path = tmp_path / "seed.yaml"
        path.write_text(f"seed: {seed}\n")
        one_line_failure(
            runner.invoke(app, ["config", str(path)]), str(path), "'seed'", "2**32 - 1"
        )
    path.write_text("seed: 4294967295\n")
    assert runner.invoke(app, ["config", str(path)]).exit_code == 0
