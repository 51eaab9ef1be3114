"""Scoring's readers: worker processes where the platform forks them, threads elsewhere.

Reading an image (decoding, conforming, site normalization, the review thumbnail) is mostly
Python and small numpy operations that hold the interpreter lock, so reader threads barely run
in parallel. In processes they do not share it: scoring 2048 HAM10000 images on 2 cores, the
networks waited 1.94 and 1.84 ms per image for two reader processes against 2.54 and 2.92 ms
for two threads (alternated in one process, ``benchmarks/reading_plan.py``). A process also
contains a crash: a decoder that dies on a hostile file (a C library's segmentation fault)
takes down its worker, not the batch. The items the dead pool held are then read again one at a time, each in a
process of its own; the one that dies again becomes an error row naming its file, and the pool
is started afresh for the batches after it.

The workers are forked, not spawned: a child starts with the run already loaded (spawning would
import torch and load the run again in every worker, seconds on a small machine), and it runs
only the reader: torch single-threaded as :func:`~sitefusion.scoring.reading.init_reader_thread`
sets it (as PyTorch's own data-loader workers do), no GPU, Ctrl-C left to the parent, and it
dies with the process that forked it (it holds the output folder's lock with the parent's
descriptors; a killed batch must leave it free for the rerun). Where ``fork`` is not the
platform's safe default (macOS, Windows) the readers are threads. Either way an item reads to the same bytes, so the rows do not depend on the kind of
reader (tests/scoring/test_scoring_reading_plan.py).
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

from sitefusion.scoring.discovery import ScoreItem
from sitefusion.scoring.reading import ItemReader, LoadedItem, init_reader_thread

__all__ = ["ReaderPool", "Reads", "can_fork_readers"]

_PR_SET_PDEATHSIG = 1  # prctl(2)

#: The reader of the forked worker processes (set by :func:`_init_worker` in each child).
_WORKER_READER: ItemReader | None = None


def can_fork_readers() -> bool:
    """Whether readers run as forked processes here: Linux, where ``fork`` is the safe default
    start method (on macOS system libraries are not fork-safe; Windows cannot fork)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _die_with(parent: int) -> None:
    """End this child when ``parent`` (the scoring process that forked it) dies. A reader
    inherits the output folder's lock with the parent's descriptors: one left reading after
    its batch was killed (SIGKILL, the OOM killer) would hold it, and the rerun that resumes
    the batch would be refused as another batch writing there."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux's C library: nothing to ask
        return
    if os.getppid() != parent:  # it died before the request was made
        os._exit(1)


def _init_worker(reader: ItemReader, parent: int) -> None:
    global _WORKER_READER
    _die_with(parent)
    _WORKER_READER = reader
    # The parent decides when to stop: Ctrl-C there cancels the reads; a child that raised
    # KeyboardInterrupt would only print a second traceback. SIGTERM ends a child at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    init_reader_thread()


def _read_with(reader: ItemReader, items: list[ScoreItem]) -> list[LoadedItem]:
    return [reader.load(item) for item in items]


def _read_part(items: list[ScoreItem]) -> list[LoadedItem]:
    if _WORKER_READER is None:  # only reachable if a pool were built without its initializer
        raise RuntimeError("reader process started without its reader")
    return _read_with(_WORKER_READER, items)


def _stripped(item: ScoreItem) -> ScoreItem:
    """The item as a worker needs it: a batch's identifiers (every DICOM header's names and
    ids) stay in the parent, which redacts; they would otherwise be copied with every item."""
    return replace(item, identifiers=frozenset()) if item.identifiers else item


@dataclass
class Reads:
    """The reads of one batch in flight: its parts (consecutive items) and their futures."""

    parts: list[tuple[list[ScoreItem], Future[list[LoadedItem]]]]

    def cancel(self) -> None:
        """Cancel the parts no reader has started (an interrupted batch)."""
        for _, future in self.parts:
            future.cancel()


class ReaderPool:
    """``workers`` readers of ``reader``'s items: forked processes when ``processes`` (and
    :func:`can_fork_readers`), else threads. ``submit`` a batch's items, then ``results``."""

    def __init__(self, reader: ItemReader, workers: int, processes: bool) -> None:
        self.reader = reader
        self.workers = max(1, workers)
        self.processes = processes and can_fork_readers()
        self._pool: Executor = self._start()

    def _start(self) -> Executor:
        if not self.processes:
            return ThreadPoolExecutor(max_workers=self.workers, initializer=init_reader_thread)
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(self.reader, os.getpid()),
        )

    def _restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()

    def submit(self, items: list[ScoreItem]) -> Reads:
        """Start reading ``items``: one task per item in threads; in processes, one share of
        consecutive items per worker. Shares of a quarter of that size waited longer in
        ``score_inputs`` (2048 HAM10000 images, batches of 16, alternated, load below 0.5:
        1.80 and 2.23 ms per image against 1.51 and 1.77)."""
        if not self.processes:
            return Reads([([it], self._pool.submit(_read_with, self.reader, [it])) for it in items])
        n_parts = min(len(items), self.workers)
        bounds = [len(items) * k // n_parts for k in range(n_parts + 1)] if n_parts else [0]
        parts = [items[a:b] for a, b in itertools.pairwise(bounds)]
        for attempt in (1, 2):
            try:
                futures = [
                    self._pool.submit(_read_part, [_stripped(it) for it in p]) for p in parts
                ]
                break
            except BrokenProcessPool:  # a worker died after the last batch: start afresh
                if attempt == 2:
                    raise
                self._restart()
        return Reads(list(zip(parts, futures, strict=True)))

    def results(self, reads: Reads) -> list[LoadedItem]:
        """The batch's items read, in order; an item whose reader process died is read again
        on its own, and becomes an error row if it kills that process too."""
        loaded: list[LoadedItem] = []
        broken = False
        for part, future in reads.parts:
            try:
                got = future.result()
            except BrokenProcessPool:
                broken = True
                got = [self._read_alone(item) for item in part]
            if not self.processes:
                loaded += got
                continue
            # the parent's own item (with the identifiers it redacts with) in each result
            for item, one in zip(part, got, strict=True):
                one.item = item
                loaded.append(one)
        if broken:
            self._restart()
        return loaded

    def _read_alone(self, item: ScoreItem) -> LoadedItem:
        """Read ``item`` in a process of its own; the reason if that process dies."""
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(
            target=_read_one, args=(self.reader, _stripped(item), send, os.getpid())
        )
        child.start()
        send.close()
        try:
            result: LoadedItem = receive.recv()
        except EOFError:  # the child died before it could answer
            child.join()
            return LoadedItem(item, error=f"{item.input}: {_death(child.exitcode)}")
        finally:
            receive.close()
        child.join()
        result.item = item
        return result

    def close(self, cancel: bool = False) -> None:
        """Stop the readers (cancelling reads not started when ``cancel``)."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)


def _read_one(reader: ItemReader, item: ScoreItem, send: Connection, parent: int) -> None:
    _init_worker(reader, parent)
    send.send(reader.load(item))


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = signal.Signals(-exitcode).name
        except ValueError:
            how = f"signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"the reader process died while reading this file ({how}); it was not scored"
