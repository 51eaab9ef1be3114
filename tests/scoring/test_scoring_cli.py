"""The ``score`` command: flag handling, colour conversion and one-line failures."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image
from scoring_samples import pydicom_path
from typer.testing import CliRunner

from sitefusion.cli.main import app
from sitefusion.errors import UnknownChoiceError
from sitefusion.scoring import score_inputs


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))


def test_site_flag_picks_the_normalizer(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["score", str(scoring_run), str(synthetic_pngs[0]), "--out", str(out), "--site", "site_a"],
    )
    assert result.exit_code == 0, result.output
    (row,) = _rows(out)
    assert (row["site"], row["site_source"]) == ("site_a", "flag")
    assert (row["norm_site"], row["norm_policy"]) == ("site_a", "known")


def test_readers_flag_sets_the_reader_count_not_the_scores(
    scoring_run: Path,
    synthetic_pngs: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sitefusion.scoring.batch as batch

    asked: list[int] = []
    real = batch.reading_plan

    def recording(workers: int, *args: object, **kwargs: object) -> object:
        asked.append(workers)
        return real(workers, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "reading_plan", recording)
    folder = synthetic_pngs[0].parent
    written = []
    for readers in ("1", "3"):
        out = tmp_path / f"readers_{readers}"
        args = ["score", str(scoring_run), *map(str, synthetic_pngs), "--out", str(out)]
        result = CliRunner().invoke(app, [*args, "--readers", readers])
        assert result.exit_code == 0, result.output
        written.append((out / "scores.csv").read_bytes())
    assert asked == [1, 3] and written[0] == written[1]
    out = tmp_path / "none"
    refused = CliRunner().invoke(
        app, ["score", str(scoring_run), str(folder), "--out", str(out), "--readers", "0"]
    )
    assert refused.exit_code == 2 and "--readers" in refused.output and not out.exists()


def test_an_unknown_site_flag_is_refused_with_a_suggestion(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'site_a'"):
        score_inputs(scoring_run, [synthetic_pngs[0]], tmp_path / "out", site="site_aa")


def test_colour_is_converted_only_when_asked(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    rgb = tmp_path / "rgb.png"
    Image.open(synthetic_pngs[0]).convert("RGB").save(rgb)
    plain = score_inputs(scoring_run, [rgb], tmp_path / "plain")
    assert (plain.ok, plain.errors) == (0, 1)
    converted = score_inputs(scoring_run, [rgb], tmp_path / "converted", convert_colour=True)
    assert (converted.ok, converted.errors) == (1, 0)


def test_a_missing_run_fails_in_one_line(synthetic_pngs: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["score", str(tmp_path / "no_run"), str(synthetic_pngs[0]), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 1
    assert "run directory does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_no_readable_input_fails_but_still_writes_the_error_rows(
    scoring_run: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    (bad / "b.dcm").write_text("text")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["score", str(scoring_run), str(bad), "--out", str(out)])
    assert result.exit_code == 1
    assert "none of the 2 inputs could be scored" in result.output
    assert [r["status"] for r in _rows(out)] == ["error", "error"]


def test_another_runs_output_folder_is_refused(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "scoring.json").write_text('{"run_id": "someone-else"}')
    result = CliRunner().invoke(
        app, ["score", str(scoring_run), str(synthetic_pngs[0]), "--out", str(out)]
    )
    assert result.exit_code == 1 and "holds scores of run 'someone-else'" in result.output


def test_output_folder_inside_the_inputs_is_not_scored(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    shutil.copy(synthetic_pngs[0], tmp_path / "a.png")
    out = tmp_path / "scores"
    first = score_inputs(scoring_run, [tmp_path], out, explain=True)
    second = score_inputs(scoring_run, [tmp_path], out, explain=True)
    assert first.items == second.items == 1


def test_an_sr_that_cannot_be_built_never_loses_the_scores(
    scoring_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sitefusion.scoring.sr_files as sr_files

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("evidence of two studies")

    monkeypatch.setattr(sr_files, "build_series_sr", broken)
    shutil.copy(pydicom_path("CT_small.dcm"), tmp_path / "ct.dcm")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["score", str(scoring_run), str(tmp_path / "ct.dcm"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "SR not written: ValueError: evidence of two studies" in result.output
    (row,) = _rows(out)
    assert row["status"] == "ok" and row["sr"] == ""
    assert not (out / "sr").exists()
