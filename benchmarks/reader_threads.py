"""Benchmark: how fast scoring's reader threads read, with one thread and with two.

Each reader reads, decodes, conforms and site-normalizes an image, checks its intensities and
writes its review thumbnail (``ItemReader.load`` with an output folder), as ``sitefusion
score`` does, in batches of 16 through a thread pool set up like scoring's. Pools of one and
two threads alternate ``--reps`` times in one process; before each run the script waits for
the 1-minute load to fall below 0.5 and prints it. Two threads reading twice as fast as one
would mean the readers are not held back by Python's global interpreter lock.

Run (from the repository root)::

    .venv/bin/python benchmarks/reader_threads.py runs/ham --images ../shared/data/ham10000/images --n 1024
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_scoring import _images, _settle

from sitefusion.methods import FUSION_METHOD_NAMES, LoadedRun
from sitefusion.scoring.discovery import discover_items
from sitefusion.scoring.reading import ItemReader, init_reader_thread


def main() -> None:
    """Alternate pools of one and two reader threads; one line per run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=Path, required=True, help="folder of image files")
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    run = LoadedRun(args.run, methods=FUSION_METHOD_NAMES.values())
    items = discover_items(_images(args.images, args.n), volumetric=False, workers=1).items
    for rep in range(args.reps):
        for threads in (1, 2):
            out = Path(tempfile.mkdtemp(dir=args.run.parent))
            reader = ItemReader(run=run, site=None, site_map={}, convert_colour=False, out=out)
            load = _settle()
            with ThreadPoolExecutor(threads, initializer=init_reader_thread) as pool:
                t0 = time.perf_counter()
                for i in range(0, len(items), 16):
                    for future in [pool.submit(reader.load, it) for it in items[i : i + 16]]:
                        future.result()
                seconds = time.perf_counter() - t0
            shutil.rmtree(out)
            print(
                f"rep {rep + 1}, {threads} reader thread(s): {len(items) / seconds:.0f} "
                f"images/s ({load})",
                flush=True,
            )


if __name__ == "__main__":
    main()
