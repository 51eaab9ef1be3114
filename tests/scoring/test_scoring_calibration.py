"""Scores carry the fusion's temperature-scaled probabilities, and say which temperature."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from sitefusion.errors import ArtifactError
from sitefusion.methods import LoadedRun
from sitefusion.rundir import RunDir
from sitefusion.scoring import score_inputs


def _with_temperature(run: Path, dest: Path, temperature: object) -> Path:
    """A copy of ``run`` whose fusion stores ``temperature`` (hashes re-recorded)."""
    shutil.copytree(run, dest)
    store = RunDir(dest)
    meta = store.read_json("fusion/fusion.json")
    meta["calibration"] = {"temperature": temperature, "fitted_on": "a test", "n": 0}
    store.write_json("fusion/fusion.json", meta)
    return dest


def _probs(out: Path) -> tuple[list[dict[str, str]], np.ndarray]:
    rows = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))
    cols = [c for c in rows[0] if c.startswith("prob_")]
    return rows, np.array([[float(r[c]) for c in cols] for r in rows])


def test_scores_are_scaled_by_the_runs_temperature(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    plain = _with_temperature(scoring_run, tmp_path / "t1", 1.0)
    warm = _with_temperature(scoring_run, tmp_path / "t3", 3.0)
    score_inputs(plain, synthetic_pngs, tmp_path / "s1")
    score_inputs(warm, synthetic_pngs, tmp_path / "s3")
    rows1, p1 = _probs(tmp_path / "s1")
    rows3, p3 = _probs(tmp_path / "s3")
    assert [r["input"] for r in rows1] == [r["input"] for r in rows3]
    assert {r["temperature"] for r in rows1} == {"1.0"}
    assert {r["temperature"] for r in rows3} == {"3.0"}
    # softmax(z / 3) from softmax(z): log-probabilities divided by 3, renormalized
    z = np.log(np.clip(p1, 1e-12, 1.0)) / 3.0
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(p3, expected, atol=1e-4)
    assert not np.allclose(p3, p1, atol=1e-3)  # the scaling did something
    assert [r["prediction"] for r in rows1] == [r["prediction"] for r in rows3]


def test_evaluation_probabilities_stay_unscaled(scoring_run: Path, tmp_path: Path) -> None:
    run = LoadedRun(_with_temperature(scoring_run, tmp_path / "t3", 3.0))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(4, run.channels, *run.spatial_size)).astype(np.float32)
    images *= np.linspace(0.2, 1.0, 4, dtype=np.float32)[:, None, None, None]
    raw = run.predict(images, [run.expert_sites[0]] * 4)
    assert run.temperature("fusion") == 3.0
    scaled = run.predict_rows(raw, slice(None), "fusion", calibrated=True)
    assert scaled is not None
    z = np.log(raw.probs["fusion"]) / 3.0
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(scaled.probs, expected / expected.sum(1, keepdims=True), rtol=1e-5)
    # other methods are never scaled
    average = run.predict_rows(raw, slice(None), "output_average", calibrated=True)
    assert average is not None
    np.testing.assert_allclose(average.probs, raw.probs["output_average"])


@pytest.mark.parametrize("bad", [0.0, -1.0, "warm", True])
def test_a_bad_stored_temperature_is_refused_naming_the_file(
    scoring_run: Path, tmp_path: Path, bad: object
) -> None:
    run = _with_temperature(scoring_run, tmp_path / "bad", bad)
    with pytest.raises(ArtifactError, match=r"fusion\.json.*calibration\.temperature"):
        LoadedRun(run)
