"""The output folder: fsynced journal, truncated-line recovery, run check, sorted final files."""

from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path

import pytest

from sitefusion.errors import SiteFusionError
from sitefusion.scoring import ScoreStore, score_columns

COLUMNS = score_columns(["benign", "malignant"], ["site_a", "site_b"])


def _row(item: str, input_: str, **extra: object) -> dict[str, object]:
    return {"item": item, "input": input_, "status": "ok", "score_key": "k" + item, **extra}


def test_columns_have_one_probability_per_class_and_one_weight_per_expert() -> None:
    assert COLUMNS[:4] == ["input", "status", "error", "prediction"]
    assert {"prob_benign", "prob_malignant", "weight_site_a", "weight_site_b"} <= set(COLUMNS)
    assert {"norm_site", "norm_policy", "site_source", "ood_score", "ood_flag", "run_id"} <= set(
        COLUMNS
    )
    assert {"study_uid", "series_uid", "sop_uids", "explanation"} <= set(COLUMNS)


def test_journal_survives_a_cut_line_and_finalizes_sorted(tmp_path: Path) -> None:
    with ScoreStore(tmp_path, run_id="r1", run_dir="x", columns=COLUMNS) as store:
        store.append(_row("b", "/z.png", prob_benign=0.25, ood_flag=False))
        store.append(_row("a", "/a.png", sop_uids=["1.2", "1.3"]))
    journal = tmp_path / "scores.jsonl"
    with journal.open("a") as fh:
        fh.write('{"item": "c", "input": "/c.p')  # a kill in the middle of a line
    with ScoreStore(tmp_path, run_id="r1", run_dir="x", columns=COLUMNS) as store:
        assert sorted(store.rows) == ["a", "b"]
        store.append(_row("b", "/z.png", prob_benign=0.5))  # a newer row replaces the old
        rows = store.finalize()
    assert [r["item"] for r in rows] == ["a", "b"]
    lines = journal.read_text().splitlines()
    assert [json.loads(line)["item"] for line in lines] == ["a", "b"]
    assert json.loads(lines[1])["prob_benign"] == 0.5
    table = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert table[0]["sop_uids"] == "1.2;1.3"
    assert table[1]["prob_benign"] == "0.5"
    assert list(table[0]) == COLUMNS


def test_another_runs_folder_is_refused(tmp_path: Path) -> None:
    with ScoreStore(tmp_path, run_id="r1", run_dir="x", columns=COLUMNS):
        pass
    with (
        pytest.raises(SiteFusionError, match="holds scores of run 'r1'"),
        ScoreStore(tmp_path, run_id="r2", run_dir="y", columns=COLUMNS),
    ):
        pass


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path: Path) -> None:
    with (
        ScoreStore(tmp_path, run_id="r1", run_dir="x", columns=COLUMNS),
        pytest.raises(SiteFusionError, match="another scoring batch"),
        ScoreStore(tmp_path, run_id="r1", run_dir="x", columns=COLUMNS),
    ):
        pass
    with ScoreStore(tmp_path, run_id="r1", run_dir="x", columns=COLUMNS):
        pass  # released


def test_background_fsyncs_cover_every_batch_and_end_before_the_journal_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[int, str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append((fd, threading.current_thread().name))

    monkeypatch.setattr(os, "fsync", fsync)
    with ScoreStore(tmp_path, run_id="r1", run_dir="x", columns=COLUMNS) as store:
        store.append(_row("a", "/a.png"), fsync=False)
        store.sync_in_background()
        store.append(_row("b", "/b.png"), fsync=False)
        store.sync_in_background()  # waits for the first, starts the second
        store.finalize()  # waits for the second before closing the journal (then its own fsyncs)
    background = [name for _, name in synced if name.startswith("journal-fsync")]
    assert len(background) == 2
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["item"] for line in lines] == ["a", "b"]


def test_a_failed_background_fsync_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with ScoreStore(tmp_path, run_id="r1", run_dir="x", columns=COLUMNS) as store:
        store.append(_row("a", "/a.png"), fsync=False)
        monkeypatch.setattr(os, "fsync", broken)
        store.sync_in_background()
        with pytest.raises(OSError, match="Input/output"):
            store.sync_in_background()
        monkeypatch.undo()
