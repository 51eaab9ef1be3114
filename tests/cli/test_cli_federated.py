"""`sitefusion site` and `sitefusion federate` refuse what cannot work before starting a process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from typer.testing import CliRunner

from sitefusion.cli.main import app
from sitefusion.config import Config, config_to_dict

runner = CliRunner()


def test_site_refuses_plain_text_to_a_remote_superlink(synthetic_2d: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "site",
            "--superlink",
            "coordinator.example.org:9092",
            "--site",
            "site_a",
            "--manifest",
            str(synthetic_2d),
            "--workdir",
            str(tmp_path / "work"),
        ],
    )
    assert result.exit_code == 1
    assert "only allowed on loopback" in result.output
    assert "coordinator.example.org:9092" in result.output


def test_site_names_a_missing_manifest(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "site",
            "--superlink",
            "127.0.0.1:9092",
            "--site",
            "a",
            "--manifest",
            str(tmp_path / "nope.csv"),
            "--workdir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1 and "nope.csv" in result.output and "not a file" in result.output


def test_federate_refuses_a_config_without_classes_before_starting_anything(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Callable[..., Config]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(tiny_config(synthetic_2d))), encoding="utf-8")
    out = tmp_path / "run"
    result = runner.invoke(app, ["federate", str(config), "--out", str(out), "--port", "1"])
    assert result.exit_code == 1
    assert "data.classes" in result.output
    assert not out.exists()
