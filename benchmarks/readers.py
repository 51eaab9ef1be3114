"""Benchmark: how fast scoring's readers read: one thread, two threads, two forked processes.

Each reader reads, decodes, conforms and site-normalizes an image, checks its intensities and
writes its review thumbnail (``ItemReader.load`` with an output folder), as ``sitefusion
score`` does, in batches of 64 through :class:`~sitefusion.scoring.reader_pool.ReaderPool`,
the pool scoring reads with. The three kinds alternate ``--reps`` times in one process; before
each run the script waits for the 1-minute load to fall below 0.5 and prints it. Two threads
reading twice as fast as one would mean the readers are not held back by Python's global
interpreter lock; the processes show what reading costs without it.

Run (from the repository root)::

    .venv/bin/python benchmarks/readers.py runs/ham --images ../shared/data/ham10000/images --n 2048
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench_scoring import _images, _settle

from sitefusion.methods import FUSION_METHOD_NAMES, LoadedRun
from sitefusion.scoring.discovery import discover_items
from sitefusion.scoring.reader_pool import ReaderPool, can_fork_readers
from sitefusion.scoring.reading import ItemReader

KINDS = ((1, False, "1 thread"), (2, False, "2 threads"), (2, True, "2 processes"))


def main() -> None:
    """Alternate the reader kinds; one line per run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of image files")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    if not can_fork_readers():
        raise SystemExit("reader processes need a platform that forks them (Linux)")
    run = LoadedRun(args.run, methods=FUSION_METHOD_NAMES.values())
    items = discover_items(_images(args.images, args.n), volumetric=False, workers=1).items
    for rep in range(args.reps):
        for workers, processes, name in KINDS:
            out = Path(tempfile.mkdtemp(dir=args.run.parent))
            reader = ItemReader(run=run, site=None, site_map={}, convert_colour=False, out=out)
            load = _settle()
            t0 = time.perf_counter()
            pool = ReaderPool(reader, workers, processes)
            for i in range(0, len(items), 64):
                loaded = pool.results(pool.submit(items[i : i + 64]))
                if any(b.error for b in loaded):
                    raise SystemExit(f"unreadable: {next(b.error for b in loaded if b.error)}")
            pool.close()
            seconds = time.perf_counter() - t0
            shutil.rmtree(out)
            print(
                f"rep {rep + 1}, {name}: {len(items) / seconds:.0f} images/s ({load})", flush=True
            )


if __name__ == "__main__":
    main()
