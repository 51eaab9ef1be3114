"""Benchmark: reading each batch ahead of its networks or before them, same machine, same run.

``sitefusion score`` picks one of the two by the cores (``reading_plan`` in
:mod:`sitefusion.scoring.batch`); this script forces each in turn, alternately in one process
(``--reps`` times each), with ``--workers`` readers (processes where the platform forks
them, as scoring reads) and torch's default thread count
(every core), and waits for the 1-minute load to fall below 0.5 before each run. It prints
images/s and the process's user CPU seconds per run, and the medians.

Run (from the repository root)::

    .venv/bin/python benchmarks/reading_plan.py runs/ham --images ../shared/data/ham10000/images --n 2048
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_scoring import _images, _settle

import sitefusion.scoring.batch as batch
from sitefusion.scoring import score_inputs
from sitefusion.scoring.reader_pool import can_fork_readers


def _cpu() -> float:
    """User CPU seconds of this process and of its finished children (the reader processes)."""
    return sum(
        resource.getrusage(who).ru_utime for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def main() -> None:
    """Alternate the two plans and print one line per run, then the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of image files")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    files = _images(args.images, args.n)
    speeds: dict[bool, list[float]] = {True: [], False: []}
    for rep in range(args.reps):
        for ahead in (True, False):
            plan = batch.ReadingPlan(args.workers, ahead, can_fork_readers())
            batch.reading_plan = lambda *_a, plan=plan, **_k: plan  # type: ignore[assignment]
            load = _settle()
            r0, t0 = _cpu(), time.perf_counter()
            with tempfile.TemporaryDirectory(dir=args.run.parent) as tmp:
                score_inputs(args.run, files, Path(tmp) / "out", workers=args.workers)
            seconds, r1 = time.perf_counter() - t0, _cpu()
            speeds[ahead].append(args.n / seconds)
            print(
                f"rep {rep + 1} {'ahead of the networks' if ahead else 'before each batch'}: "
                f"{args.n / seconds:.0f} images/s, {r1 - r0:.1f} CPU s user (readers included) "
                f"({load}, torch threads {torch.get_num_threads()})",
                flush=True,
            )
    print(
        f"median images/s: ahead {statistics.median(speeds[True]):.0f}, "
        f"before {statistics.median(speeds[False]):.0f}"
    )


if __name__ == "__main__":
    main()
