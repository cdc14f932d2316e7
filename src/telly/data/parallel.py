"""Work on many items in worker processes, the results in the items' order.

The data builders read source files and make records through `ordered_map`: every item's result
depends on the item alone, and the results come back in the items' order, so the files a build
writes are the same to the byte whatever the number of processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from telly.errors import UserError

# Workers start fresh, forked from a server process (new interpreters where there is none): they
# share no open file, lock or thread with this process, as a fork of it would. The server loads
# the data builders once, so a worker starts in a fraction of a second.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
SERVER_PRELOAD = ["__main__", "telly.data"]  # "__main__": multiprocessing's own default

Item = TypeVar("Item")
Result = TypeVar("Result")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")


def ordered_map(
    function: Callable[[Item], Result], items: Sequence[Item], jobs: int | None, chunk_size: int
) -> Iterator[Result]:
    """`function(item)` for every item, in the items' order.

    With `jobs` above 1 (None: one per available core), up to that many worker processes do the
    work, `chunk_size` items at a time; when there is only one chunk, or `jobs` is 1, it is done
    in this process. `function` must be picklable (a function defined at module level, or a
    `functools.partial` of one: its arguments go to each worker once, not with every chunk), and
    so must the items and results. An exception raised by `function` reaches the caller as it
    would in this process; the work still queued is then dropped.
    """
    jobs = available_cores() if jobs is None else jobs
    check_jobs(jobs)
    workers = min(jobs, -(-len(items) // chunk_size))
    if workers <= 1:
        yield from map(function, items)
        return
    context = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        context.set_forkserver_preload(SERVER_PRELOAD)  # read when the server starts, the first time
    pool = ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(function,))
    try:
        yield from pool.map(_call_worker_function, items, chunksize=chunk_size)
    finally:  # also when the caller stops early (an error, Ctrl-C): no chunk still queued runs
        pool.shutdown(cancel_futures=True)


_worker_function: Callable | None = None  # in a worker process: the function it applies


def _start_worker(function: Callable) -> None:
    """Keeps the worker's function, and leaves Ctrl-C to the parent: it reaches every process of
    the terminal's group, and the parent alone stops the work, so no worker prints a traceback."""
    global _worker_function
    _worker_function = function
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _call_worker_function(item):
    return _worker_function(item)
