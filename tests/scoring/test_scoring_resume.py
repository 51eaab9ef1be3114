"""A batch killed mid-way and rerun ends with exactly the rows of an uninterrupted batch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from scoring_samples import pydicom_path, write_bad_inputs

from sitefusion.scoring import ScoreStore, score_inputs


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the batch may catch it."""


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, synthetic_pngs: list[Path]) -> Path:
    root = tmp_path_factory.mktemp("resume_inputs")
    for i, png in enumerate(synthetic_pngs):
        shutil.copy(png, root / f"img_{i}.png")
    shutil.copy(pydicom_path("CT_small.dcm"), root / "ct.dcm")
    write_bad_inputs(root / "bad", synthetic_pngs[0])
    return root


def test_kill_then_rerun_gives_the_rows_of_an_uninterrupted_run(
    scoring_run: Path, batch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = score_inputs(scoring_run, [batch], tmp_path / "whole", batch_size=4)
    assert whole.items == 13 and whole.ok == 7 and whole.scored == 13

    calls = {"n": 0}
    original = ScoreStore.append

    def dying_append(self: ScoreStore, row: dict[str, object], **kwargs: bool) -> None:
        if calls["n"] == 5:
            raise _Killed
        calls["n"] += 1
        original(self, row, **kwargs)

    monkeypatch.setattr(ScoreStore, "append", dying_append)
    with pytest.raises(_Killed):
        score_inputs(scoring_run, [batch], tmp_path / "killed", batch_size=4)
    journal = tmp_path / "killed" / "scores.jsonl"
    assert len(journal.read_text().splitlines()) == 5  # what was scored is on disk
    assert not (tmp_path / "killed" / "scores.csv").exists()
    with journal.open("a") as fh:
        fh.write('{"item": "half a line')  # the kill hit during a write
    monkeypatch.setattr(ScoreStore, "append", original)

    resumed = score_inputs(scoring_run, [batch], tmp_path / "killed", batch_size=4)
    assert (resumed.skipped, resumed.scored) == (5, 8)
    for name in ("scores.csv", "scores.jsonl"):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "whole" / name).read_text()

    again = score_inputs(scoring_run, [batch], tmp_path / "killed", batch_size=4)
    assert (again.skipped, again.scored, again.ok) == (13, 0, 7)


def test_changed_content_or_options_are_scored_again(
    scoring_run: Path, synthetic_pngs: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, png in enumerate(synthetic_pngs[:3]):
        shutil.copy(png, folder / f"img_{i}.png")
    out = tmp_path / "out"
    assert score_inputs(scoring_run, [folder], out).scored == 3
    shutil.copy(synthetic_pngs[4], folder / "img_1.png")  # new content, same path
    second = score_inputs(scoring_run, [folder], out)
    assert (second.scored, second.skipped, second.items) == (1, 2, 3)
    third = score_inputs(scoring_run, [folder], out, site="site_a")
    assert third.scored == 3
    assert len((out / "scores.csv").read_text().splitlines()) == 4  # header + one row per input
