"""When a batch's images are read (ahead of the networks on spare cores, else before each batch)
and by what (forked processes or threads) changes how fast a batch runs, never what it writes;
a reader process that dies costs its one item; a raster file is opened once."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from scoring_samples import CallLog

import sitefusion.scoring.batch as batch_module
import sitefusion.scoring.reading as reading_module
from sitefusion.memory import keep_freed_memory
from sitefusion.scoring import score_inputs
from sitefusion.scoring.batch import ReadingPlan, reading_plan
from sitefusion.scoring.reader_pool import can_fork_readers

needs_fork = pytest.mark.skipif(not can_fork_readers(), reason="readers fork only on Linux")


def test_reading_goes_ahead_only_on_cores_the_networks_leave_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    cpu = torch.device("cpu")
    fork = can_fork_readers()
    assert reading_plan(2, cpu, cores=2) == ReadingPlan(2, False, fork)  # every core computes
    assert reading_plan(4, cpu, cores=3) == ReadingPlan(1, True, fork)  # one spare core
    assert reading_plan(2, cpu, cores=16) == ReadingPlan(2, True, fork)
    assert reading_plan(0, cpu, cores=1) == ReadingPlan(1, False, fork)
    # ``workers`` bounds the reads in flight (and their memory) in both plans
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert reading_plan(1, cpu, cores=16) == ReadingPlan(1, False, fork)
    # networks on a GPU leave the cores to the readers
    assert reading_plan(2, torch.device("cuda", 0), cores=2) == ReadingPlan(2, True, fork)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, synthetic_pngs: list[Path]) -> Path:
    root = tmp_path_factory.mktemp("plan_inputs")
    for i, png in enumerate(synthetic_pngs):
        shutil.copy(png, root / f"img_{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def _force(monkeypatch: pytest.MonkeyPatch, plan: ReadingPlan) -> None:
    monkeypatch.setattr(batch_module, "reading_plan", lambda *a, **k: plan)


def _written(out: Path) -> list[bytes]:
    return [(out / n).read_bytes() for n in ("scores.csv", "scores.jsonl")]


@pytest.mark.parametrize("readers", [1, 3])
def test_every_reading_plan_and_reader_kind_writes_the_same_rows(
    scoring_run: Path,
    inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    readers: int,
) -> None:
    written = {}
    for ahead in (False, True):
        for processes in (False, True):
            _force(monkeypatch, ReadingPlan(readers, ahead, processes))
            out = tmp_path / f"ahead_{ahead}_processes_{processes}"
            summary = score_inputs(scoring_run, [inputs], out, batch_size=4)
            assert (summary.items, summary.ok, summary.errors) == (7, 6, 1)
            assert len(list((out / "thumbs").glob("*.png"))) == 6  # written by the readers
            written[ahead, processes] = _written(out)
    assert len(set(map(tuple, written.values()))) == 1, "the rows depend on how they were read"


@needs_fork
def test_a_reader_process_that_dies_costs_only_its_own_item(
    scoring_run: Path, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder that crashes the process (as a C library can on a hostile file) takes down
    its reader process; the batch goes on, the file becomes an error row naming it, the other
    rows are those of a batch without it, and the batches after it are read as before."""
    import faulthandler
    import os
    import shutil
    import signal

    crashing = tmp_path / "in"
    shutil.copytree(inputs, crashing)
    (crashing / "img_2.png").rename(crashing / "zz_crash.png")
    _force(monkeypatch, ReadingPlan(2, False, True))
    clean = score_inputs(scoring_run, [crashing], tmp_path / "clean", batch_size=4)
    assert (clean.ok, clean.errors) == (6, 1)

    real = reading_module.read_item

    def crash_on(item: Any, *args: Any) -> Any:
        if Path(item.input).name == "zz_crash.png":
            faulthandler.disable()  # pytest's handler would print the child's stacks
            os.kill(os.getpid(), signal.SIGSEGV)
        return real(item, *args)

    monkeypatch.setattr(reading_module, "read_item", crash_on)
    parent = os.getpid()
    out = tmp_path / "out"
    summary = score_inputs(scoring_run, [crashing], out, batch_size=4)
    assert os.getpid() == parent and (summary.ok, summary.errors) == (5, 2)
    rows = {Path(r["input"]).name: r for r in _jsonl(out)}
    crashed = rows.pop("zz_crash.png")
    assert crashed["status"] == "error"
    assert crashed["error"] == (
        f"{crashing / 'zz_crash.png'}: the reader process died while reading this file "
        "(SIGSEGV); it was not scored"
    )
    before = {Path(r["input"]).name: r for r in _jsonl(tmp_path / "clean")}
    del before["zz_crash.png"]
    same = ("status", "error", "prediction", "ood_score", "norm_site")
    assert {n: [r[k] for k in same] for n, r in rows.items()} == {
        n: [r[k] for k in same] for n, r in before.items()
    }


def _jsonl(out: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]


def test_a_raster_file_is_opened_by_pillow_once(
    scoring_run: Path,
    inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    call_log: CallLog,
) -> None:
    """The channel check reads the header of the same opening that decodes the pixels (it
    was a second opening of every file)."""
    from PIL import Image

    real = Image.open

    def counting(fp: Any, *args: Any, **kwargs: Any) -> Any:
        call_log.add(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    score_inputs(scoring_run, [inputs], tmp_path / "out", batch_size=4)
    reads = [p for p in call_log.lines() if Path(p).parent == inputs]
    assert sorted(reads) == sorted(str(p) for p in inputs.iterdir())


def test_the_allocator_keeps_freed_memory_on_linux() -> None:
    if not Path("/proc/self/maps").exists():
        pytest.skip("glibc allocator settings are Linux-only")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process; a second call changes nothing


_SLOW_BATCH = """
import sys, time
from pathlib import Path
import sitefusion.scoring.reading as reading
real = reading.read_item
def slow(item, *args):
    time.sleep(0.5)
    return real(item, *args)
reading.read_item = slow
from sitefusion.scoring import score_inputs
score_inputs(Path(sys.argv[1]), [Path(sys.argv[2])], Path(sys.argv[3]), batch_size=2)
"""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_fork
def test_a_killed_batch_leaves_no_reader_behind_and_its_folder_free(
    scoring_run: Path, inputs: Path, tmp_path: Path
) -> None:
    """Reader processes inherit the output folder's lock; a batch killed outright (SIGKILL,
    the OOM killer) must not leave them reading on, holding it: the rerun that resumes the
    batch would be refused as 'another scoring batch'."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    batch = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BATCH, str(scoring_run), str(inputs), str(out)], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not list((out / "thumbs").glob("*.png")) and time.monotonic() < deadline:
            if batch.poll() is not None:
                pytest.fail(f"the batch ended early (exit code {batch.returncode})")
            time.sleep(0.1)
        readers = _children(batch.pid)
        assert readers, "the batch reads in child processes"
    finally:
        batch.send_signal(signal.SIGKILL)
        batch.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(map(_alive, readers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, readers)), "reader processes outlived their batch"
    summary = score_inputs(scoring_run, [inputs], out, batch_size=2)  # resumes, not refused
    assert (summary.items, summary.ok, summary.errors) == (7, 6, 1)
