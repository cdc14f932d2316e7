"""Seconds of `telly data build` in one process and in worker processes, measured side by side.

Each task's data set is built from the same sources with `--jobs 1` and with `--jobs N`, one
build after the other in one run, each the real command in a process of its own (its start and
the workers' included). It prints the wall seconds, the speedup and whether the two builds wrote
the same files (the SHA-256 of every file, printed too, to compare with other builds). The
machine's load average, before and after, says how much else ran meanwhile. Usage:

    python bench/data_build_speed.py [SOURCES ...] [--language python] [--tasks code-search,clone-detection]
                                     [--jobs N] [--rounds 1]

Without sources, the language's standard sources (this Python's standard library).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from telly.data import BUILDERS
from telly.data.parallel import available_cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", help="source folders, files or .zip archives (default: the stdlib)")
    parser.add_argument("--language", default=None, help="the sources' language (default: told by their files)")
    parser.add_argument("--tasks", default="code-search", help=f"comma-separated, of: {', '.join(BUILDERS)} "
                        "(default: code-search)")
    parser.add_argument("--jobs", type=int, default=available_cores(),
                        help="worker processes of the parallel build (default: the available cores)")
    parser.add_argument("--rounds", type=int, default=1, help="builds of each kind per task, alternating")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    unknown = [task for task in tasks if task not in BUILDERS]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}")
    if args.jobs < 2:
        parser.error(f"--jobs must be at least 2 to compare with one process, got {args.jobs}")

    print(f"load average before: {load_average()}; {available_cores()} cores available", flush=True)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="telly-data-bench-"))
    try:
        for task in tasks:
            seconds = {1: [], args.jobs: []}
            digests = {}
            for _ in range(args.rounds):
                for jobs in seconds:
                    out = work / f"{task}-{jobs}"
                    seconds[jobs].append(timed_build(args.sources, args.language, task, jobs, out))
                    digests[jobs] = file_digests(out)
                    print(f"{task} --jobs {jobs}: {seconds[jobs][-1]:.1f} s", flush=True)
            for name, digest in digests[1].items():
                print(f"  {name} sha256 {digest}")
            serial, parallel = min(seconds[1]), min(seconds[args.jobs])
            rows.append((task, serial, parallel, digests[1] == digests[args.jobs], len(digests[1])))
    finally:
        shutil.rmtree(work)
    print(f"load average after: {load_average()}\n")
    print(f"| task | --jobs 1 | --jobs {args.jobs} | speedup | same files (SHA-256) |")
    print("|---|---|---|---|---|")
    for task, serial, parallel, same, files in rows:
        print(f"| {task} | {serial:.1f} s | {parallel:.1f} s | {serial / parallel:.2f}x | "
              f"{'yes' if same else 'NO'}, {files} files |")
    if not all(same for *_, same, _ in rows):
        sys.exit("the parallel build wrote other files than the serial one")


def timed_build(sources: list[str], language: str | None, task: str, jobs: int, out: Path) -> float:
    """Wall seconds of one `telly data build` in a new process."""
    command = [sys.executable, "-m", "telly.cli", "data", "build", *sources, "--task", task, "--jobs", str(jobs),
               "--out", str(out), "--overwrite"]
    if language:
        command += ["--language", language]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def file_digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
