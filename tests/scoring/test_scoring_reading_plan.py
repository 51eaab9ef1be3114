"""When a batch's images are read (ahead of the networks on spare cores, else before each batch)
changes how fast a batch runs, never what it writes; a raster file is opened once."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import sitefusion.scoring.batch as batch_module
from sitefusion.memory import keep_freed_memory
from sitefusion.scoring import score_inputs
from sitefusion.scoring.batch import ReadingPlan, reading_plan


def test_reading_goes_ahead_only_on_cores_the_networks_leave_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    cpu = torch.device("cpu")
    assert reading_plan(2, cpu, cores=2) == ReadingPlan(2, ahead=False)  # every core computes
    assert reading_plan(4, cpu, cores=3) == ReadingPlan(1, ahead=True)  # one spare core
    assert reading_plan(2, cpu, cores=16) == ReadingPlan(2, ahead=True)
    assert reading_plan(0, cpu, cores=1) == ReadingPlan(1, ahead=False)
    # ``workers`` bounds the reads in flight (and their memory) in both plans
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert reading_plan(1, cpu, cores=16) == ReadingPlan(1, ahead=False)
    # networks on a GPU leave the cores to the readers
    assert reading_plan(2, torch.device("cuda", 0), cores=2) == ReadingPlan(2, ahead=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, synthetic_pngs: list[Path]) -> Path:
    root = tmp_path_factory.mktemp("plan_inputs")
    for i, png in enumerate(synthetic_pngs):
        shutil.copy(png, root / f"img_{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.mark.parametrize("threads", [1, 3])
def test_both_reading_plans_write_the_same_rows(
    scoring_run: Path,
    inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    threads: int,
) -> None:
    written = {}
    for ahead in (False, True):
        monkeypatch.setattr(
            batch_module, "reading_plan", lambda *a, ahead=ahead: ReadingPlan(threads, ahead)
        )
        out = tmp_path / f"ahead_{ahead}"
        summary = score_inputs(scoring_run, [inputs], out, batch_size=4)
        assert (summary.items, summary.ok, summary.errors) == (7, 6, 1)
        written[ahead] = [(out / n).read_bytes() for n in ("scores.csv", "scores.jsonl")]
    assert written[False] == written[True]


def test_a_raster_file_is_opened_by_pillow_once(
    scoring_run: Path, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel check reads the header of the same opening that decodes the pixels (it
    was a second opening of every file)."""
    from PIL import Image

    opened: list[str] = []
    real = Image.open

    def counting(fp: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    score_inputs(scoring_run, [inputs], tmp_path / "out", batch_size=4)
    reads = [p for p in opened if Path(p).parent == inputs]
    assert sorted(reads) == sorted(str(p) for p in inputs.iterdir())


def test_the_allocator_keeps_freed_memory_on_linux() -> None:
    if not Path("/proc/self/maps").exists():
        pytest.skip("glibc allocator settings are Linux-only")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # once per process; a second call changes nothing
