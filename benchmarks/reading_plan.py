"""Benchmark: when and by what scoring reads: ahead of the networks or before each batch, in
reader processes or threads; same machine, same run.

``sitefusion score`` picks when by the cores (``reading_plan`` in
:mod:`sitefusion.scoring.batch`) and reads in forked processes where the platform forks them
(:mod:`sitefusion.scoring.reader_pool`). This script forces three plans in turn, alternately
in one process (``--reps`` times each): processes reading ahead, processes reading before
each batch, threads reading before each batch; with ``--workers`` readers and torch's default
thread count (every core). Before each run it waits for the 1-minute load to fall below 0.5.
It prints images/s, the user CPU seconds (reader processes included) and how long the
networks waited for the readers per image, then the medians.

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
from typing import Any

import torch
from bench_scoring import _images, _settle

import sitefusion.scoring.batch as batch
from sitefusion.scoring import score_inputs
from sitefusion.scoring.reader_pool import ReaderPool, Reads, can_fork_readers

PLANS = {
    "processes, ahead of the networks": (True, True),
    "processes, before each batch": (False, True),
    "threads, before each batch": (False, False),
}


def _cpu() -> float:
    """User CPU seconds of this process and of its finished children (the reader processes)."""
    return sum(
        resource.getrusage(who).ru_utime for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


def main() -> None:
    """Alternate the plans and print one line per run, then the medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of image files")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not can_fork_readers():
        raise SystemExit("reader processes need a platform that forks them (Linux)")
    files = _images(args.images, args.n)
    waited = [0.0]
    results = ReaderPool.results

    def timed_results(self: ReaderPool, reads: Reads) -> Any:
        t0 = time.perf_counter()
        try:
            return results(self, reads)
        finally:
            waited[0] += time.perf_counter() - t0

    ReaderPool.results = timed_results  # type: ignore[method-assign]
    speeds: dict[str, list[float]] = {name: [] for name in PLANS}
    for rep in range(args.reps):
        for name, (ahead, processes) in PLANS.items():
            plan = batch.ReadingPlan(args.workers, ahead, processes)
            batch.reading_plan = lambda *_a, plan=plan, **_k: plan  # type: ignore[assignment]
            load = _settle()
            waited[0] = 0.0
            r0, t0 = _cpu(), time.perf_counter()
            with tempfile.TemporaryDirectory(dir=args.run.parent) as tmp:
                score_inputs(args.run, files, Path(tmp) / "out", workers=args.workers)
            seconds, r1 = time.perf_counter() - t0, _cpu()
            speeds[name].append(args.n / seconds)
            print(
                f"rep {rep + 1} {name}: {args.n / seconds:.0f} images/s, {r1 - r0:.1f} CPU s "
                f"user, networks waited {waited[0] / args.n * 1e3:.2f} ms per image for the "
                f"readers ({load}, torch threads {torch.get_num_threads()})",
                flush=True,
            )
    print(
        "median images/s: "
        + ", ".join(f"{name} {statistics.median(v):.0f}" for name, v in speeds.items())
    )


if __name__ == "__main__":
    main()
