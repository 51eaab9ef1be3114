"""The command line: help, one-line failures, and the commands over a tiny synthetic run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sitefusion.cli.main import app
from sitefusion.config import Config, config_to_dict

runner = CliRunner()


def write_config(cfg: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def test_help_lists_commands_without_importing_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from sitefusion.cli.main import app; "
        "r = CliRunner().invoke(app, ['--help']); print(r.output); "
        "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for command in ("train", "train-expert", "evaluate", "prepare", "config", "score"):
        assert command in out.stdout
    assert "NO_TORCH" in out.stdout


def test_bad_config_key_is_a_one_line_failure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainig:\n  epochs: 2\n")
    result = runner.invoke(app, ["config", str(bad)])
    assert result.exit_code == 1
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) <= 3  # one sentence, possibly wrapped by the terminal width
    assert "trainig" in result.output and "did you mean 'training'" in result.output


def test_override_on_the_command_line(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    result = runner.invoke(
        app, ["config", str(root / "configs" / "demo.yaml"), "--set", "training.epochs=3"]
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["training"]["epochs"] == 3


def test_prepare_train_expert_train_evaluate(
    synthetic_2d: Path, tmp_path: Path, tiny_config: Callable[..., Config]
) -> None:
    cfg = write_config(tiny_config(synthetic_2d), tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    result = runner.invoke(app, ["prepare", str(cfg), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "site_a" in result.output and (out / "normalizers" / "site_a.json").exists()

    result = runner.invoke(app, ["train-expert", str(cfg), "--site", "site_b", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "experts" / "site_b.safetensors").exists()
    assert not (out / "experts" / "site_a.safetensors").exists()

    result = runner.invoke(app, ["train-expert", str(cfg), "--site", "site_x", "--out", str(out)])
    assert result.exit_code == 1 and "did you mean" in result.output

    result = runner.invoke(app, ["train", str(cfg), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "balanced accuracy" in result.output

    report = tmp_path / "report"
    result = runner.invoke(
        app, ["evaluate", str(out), "--out", str(report), "--bootstrap", "20", "--loso"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["sites"]) == {"site_a", "site_b", "site_c"}
    assert "fusion" in metrics["methods"] and "pooled" in metrics["methods"]
    assert set(metrics["leave_one_site_out"]) == {"site_a", "site_b", "site_c"}
    assert (report / "report.html").exists() and (report / "report.md").exists()
    # The printed per-site table keeps each row on one line, even at the 80 columns of a log.
    rows = [line for line in result.output.splitlines() if line.startswith("| ")]
    assert rows and len({line.count("|") for line in rows}) == 1, rows
    assert any(line.startswith("| fusion |") and line.endswith("|") for line in rows)


def test_evaluate_missing_run_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_evaluate_split_cannot_be_combined_with_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,label,site,group\n")
    args = ["evaluate", str(tmp_path), "--out", str(tmp_path / "r"), "--split", "val"]
    result = runner.invoke(app, [*args, "--manifest", str(manifest)])
    assert result.exit_code == 1
    assert "--split chooses an internal split" in result.output


@pytest.mark.parametrize(
    ("args", "missing"), [(["train"], "config"), (["evaluate"], "run_dir"), (["score"], "run_dir")]
)
def test_missing_arguments_are_a_usage_error_naming_them(args: list[str], missing: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2  # click's usage error, not a crash
    # typer spells the name as written or in capitals depending on its version
    assert f"missing argument '{missing}'" in result.output.lower()
