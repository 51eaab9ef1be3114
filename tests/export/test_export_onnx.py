"""The ONNX export: one graph of experts and fusion head, its pre-processing JSON and a runner
that needs no sitefusion, checked against sitefusion's PyTorch scoring path on real images."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from typer.testing import CliRunner

from sitefusion.atomic import sha256_file
from sitefusion.cli.main import app
from sitefusion.config import Config
from sitefusion.data import conform
from sitefusion.errors import UnknownChoiceError
from sitefusion.export import export_run
from sitefusion.io import read_image
from sitefusion.methods import LoadedRun
from sitefusion.normalization import make_normalizer
from sitefusion.rundir import RunDir

pytestmark = pytest.mark.slow

RUNNER = Path(__file__).resolve().parents[2] / "sitefusion" / "export" / "run_model.py"


def _load_runner(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"runner_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    export_run(tiny_run, out)
    return out


@pytest.fixture(scope="module")
def warm_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run whose fusion has temperature 2.5 (the tiny run's fit is 1), so
    that parity covers the scaling scoring applies."""
    import shutil

    out = tmp_path_factory.mktemp("warm") / "run"
    shutil.copytree(tiny_run, out)
    store = RunDir(out)
    name = LoadedRun(out).fusion().name
    record = store.read_json(f"fusion/{name}.json")
    record["calibration"] = {**(record.get("calibration") or {}), "temperature": 2.5}
    store.write_json(f"fusion/{name}.json", record)
    return out


@pytest.fixture(scope="module")
def tuned_run(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_config: Callable[..., Config],
    synthetic_2d: Path,
) -> Path:
    """A tiny run whose fusion has its own fine-tuned expert copies (what the graph must hold
    instead of the site experts)."""
    from sitefusion.workflows import train_run

    out = tmp_path_factory.mktemp("tuned") / "run"
    train_run(
        tiny_config(synthetic_2d, fusion={"epochs": 20, "hidden": 8, "finetune_epochs": 1}), out
    )
    return out


@pytest.fixture(scope="module")
def test_images(tiny_run: Path) -> list[tuple[Path, str]]:
    """The tiny run's test-split images (real PNG files) with their sites."""
    run = LoadedRun(tiny_run)
    root = Path(run.cfg.data.root)
    with (root / run.cfg.data.manifest).open(newline="") as fh:
        paths = {r["image_id"]: root / r["image"] for r in csv.DictReader(fh)}
    with (tiny_run / "splits.csv").open(newline="") as fh:
        return [(paths[r["id"]], r["site"]) for r in csv.DictReader(fh) if r["split"] == "test"]


def test_export_writes_a_recorded_folder(exported: Path, tiny_run: Path) -> None:
    record = json.loads((exported / "export.json").read_text())
    for name in ("model.onnx", "preprocessing.json", "run_model.py"):
        assert record["sha256"][name] == sha256_file(exported / name)
    assert record["run_id"] == LoadedRun(tiny_run).run_id
    assert record["parity_check"]["max_abs_diff_probabilities"] <= 1e-4
    fmt = record["network_data_format"]
    run = LoadedRun(tiny_run)
    assert fmt["inputs"]["image"]["spatial_shape"] == list(run.spatial_size)
    assert list(fmt["outputs"]["probabilities"]["channel_def"].values()) == list(run.classes)
    pre = json.loads((exported / "preprocessing.json").read_text())
    assert (pre["format"], pre["version"]) == ("sitefusion.onnx_preprocessing", 1)
    assert sorted(pre["normalizers"]) == sorted(LoadedRun(tiny_run).bank.sites_)
    assert (exported / "run_model.py").read_text() == RUNNER.read_text()


@pytest.mark.parametrize(
    ("site_known", "variant"),
    [(True, "tiny"), (False, "tiny"), (True, "warm"), (True, "tuned")],
    ids=["known-site", "unseen-site", "temperature-2.5", "fine-tuned-copies"],
)
def test_parity_with_the_scoring_path_on_real_images(
    exported: Path,
    tiny_run: Path,
    request: pytest.FixtureRequest,
    test_images: list[tuple[Path, str]],
    site_known: bool,
    variant: str,
    tmp_path: Path,
) -> None:
    if variant != "tiny":
        tiny_run = request.getfixturevalue(f"{variant}_run")
        export_run(tiny_run, tmp_path)
        exported = tmp_path
    run = LoadedRun(tiny_run)
    if variant == "warm":
        assert run.temperature(run.fusion().name) == 2.5
    assert (run.fusion().networks is not None) == (variant == "tuned")
    runner = _load_runner(exported / "run_model.py")
    model = runner.ExportedModel(exported)
    paths = [p for p, _ in test_images]
    sites = [s if site_known else None for _, s in test_images]
    images = np.stack(
        [conform(read_image(p).array, run.spatial_size, run.channels, path=p) for p in paths]
    )
    name = run.fusion().name
    preds = run.predict(images, sites, methods=[name])
    worst = 0.0
    for i, path in enumerate(paths):
        ref = run.predict_rows(preds, slice(i, i + 1), name, calibrated=True)
        assert ref is not None and ref.weights is not None
        x, used, policy = runner.preprocess(runner.read_image(path), sites[i], model.pre)
        assert used == preds.norm_site[i] and policy == preds.norm_policy[i]
        assert np.abs(x - run.bank.transform(images[i], sites[i]).array).max() <= 1e-4
        probs, weights = model.run(x[None])
        worst = max(worst, float(np.abs(probs[0] - ref.probs[0]).max()))
        assert np.abs(weights[0] - ref.weights[0]).max() <= 1e-4
    assert len(paths) >= 10
    assert worst <= 1e-4


def test_runner_imports_nothing_of_sitefusion(
    exported: Path, test_images: list[tuple[Path, str]]
) -> None:
    tree = ast.parse((exported / "run_model.py").read_text())
    imported = {
        (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [n])  # type: ignore[attr-defined]
    }
    assert imported <= {
        "__future__",
        "argparse",
        "json",
        "sys",
        "pathlib",
        "typing",
        "numpy",
        "onnxruntime",
        "PIL",
    }
    path, site = test_images[0]
    # sitefusion made unimportable: the script must still run
    code = (
        "import runpy, sys; sys.modules['sitefusion'] = None; "
        f"sys.argv = ['run_model.py', {str(path)!r}, '--site', {site!r}]; "
        "runpy.run_path('run_model.py', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=exported, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.strip())
    assert row["norm_site"] == site and row["norm_policy"] == "known"
    assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert row["prediction"] == max(row["probabilities"], key=row["probabilities"].get)


@pytest.mark.parametrize(
    ("kind", "channels", "params"),
    [
        ("zscore", 1, {}),
        ("percentile", 2, {}),
        ("histogram", 1, {}),
        ("colour", 3, {}),
    ],
)
def test_runner_normalization_equals_each_normalizer(
    kind: str, channels: int, params: dict[str, object], tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    scale = 255.0 if kind == "colour" else 1000.0
    images = [rng.uniform(0, scale, (channels, 20, 18)).astype(np.float32) for _ in range(4)]
    normalizer = make_normalizer(kind, **params).fit(images)
    normalizer.save(tmp_path / "n.json")
    record = json.loads((tmp_path / "n.json").read_text())
    runner = _load_runner(RUNNER)
    probe = rng.uniform(0, scale, (channels, 20, 18)).astype(np.float32)
    ours = runner.normalize(probe, record)
    assert ours.dtype == np.float32
    assert np.abs(ours - normalizer.transform(probe)).max() <= 1e-5


@pytest.mark.parametrize("shape", [(1, 37, 53), (3, 64, 48), (1, 12, 10), (1, 9, 9, 11)])
def test_runner_resize_equals_conform(shape: tuple[int, ...]) -> None:
    size = [24, 24] if len(shape) == 3 else [6, 6, 6]
    array = np.random.default_rng(2).uniform(0, 255, shape).astype(np.float32)
    runner = _load_runner(RUNNER)
    expected = conform(array, size, shape[0])
    assert np.abs(runner.resize(array, size) - expected).max() <= 1e-3


def test_unknown_format_and_cli(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'onnx'"):
        export_run(tiny_run, tmp_path / "x", format_="onx")
    result = CliRunner().invoke(
        app, ["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "cli")]
    )
    assert result.exit_code == 0, result.output
    assert "max |difference| of probabilities" in result.output
    assert (tmp_path / "cli" / "model.onnx").exists()
    bad = CliRunner().invoke(
        app, ["export", str(tiny_run), "--format", "tflite", "--out", str(tmp_path / "y")]
    )
    assert bad.exit_code == 1 and "unknown export format 'tflite'" in bad.output


def test_parity_on_a_3d_run(
    tmp_path: Path, tiny_config: Callable[..., Config], synthetic_3d: Path
) -> None:
    """Volumes: the graph's 3D experts and the runner's trilinear/area resizing."""
    from sitefusion.workflows import train_run

    train_run(tiny_config(synthetic_3d), tmp_path / "run")
    export_run(tmp_path / "run", tmp_path / "export")
    run = LoadedRun(tmp_path / "run")
    runner = _load_runner(tmp_path / "export" / "run_model.py")
    model = runner.ExportedModel(tmp_path / "export")
    root = Path(run.cfg.data.root)
    with (root / run.cfg.data.manifest).open(newline="") as fh:
        rows = list(csv.DictReader(fh))[::7][:5]
    raw = [read_image(root / r["image"]).array for r in rows]
    images = np.stack([conform(a, run.spatial_size, run.channels) for a in raw])
    sites = [r["site"] for r in rows]
    name = run.fusion().name
    preds = run.predict(images, sites, methods=[name])
    for i, array in enumerate(raw):
        ref = run.predict_rows(preds, slice(i, i + 1), name, calibrated=True)
        assert ref is not None
        x, _, _ = runner.preprocess(array, sites[i], model.pre)
        probs, _ = model.run(x[None])
        assert np.abs(probs[0] - ref.probs[0]).max() <= 1e-4
