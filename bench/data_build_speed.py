"""Seconds of `telly data build` in one process and in worker processes, measured side by side.

Each task's data set is built from the same sources with `--jobs 1` and with `--jobs N`, one
build after the other in one run, each the real command in a process of its own (its start and
the workers' included). It prints the wall seconds, the speedup and whether the two builds wrote
the same files (the SHA-256 of every file, printed too, to compare with other builds). With
`--before SRC`, the build of an older telly's source tree (a git worktree of a revision before the
speed-ups, run with PYTHONPATH=SRC/src) is timed beside them and its files compared too. The
machine's load average, before and after, says how much else ran meanwhile. Usage:

    python bench/data_build_speed.py [SOURCES ...] [--language python] [--tasks code-search,clone-detection]
                                     [--jobs N] [--rounds 1] [--before SRC]

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
    parser.add_argument("--before", type=Path, help="an older telly checkout whose (one-process) build is timed beside")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    unknown = [task for task in tasks if task not in BUILDERS]
    if unknown:
        parser.error(f"unknown task {unknown[0]!r}")
    if args.jobs < 2:
        parser.error(f"--jobs must be at least 2 to compare with one process, got {args.jobs}")
    if args.before is not None and not (args.before / "src" / "telly").is_dir():
        parser.error(f"--before: {args.before} holds no src/telly")
    kinds = ([BEFORE] if args.before else []) + [1, args.jobs]

    print(f"load average before: {load_average()}; {available_cores()} cores available", flush=True)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="telly-data-bench-"))
    try:
        for task in tasks:
            seconds = {kind: [] for kind in kinds}
            digests = {}
            for _ in range(args.rounds):
                for kind in kinds:
                    out = work / f"{task}-{kind}"
                    seconds[kind].append(timed_build(args.sources, args.language, task, kind, out, args.before))
                    digests[kind] = file_digests(out)
                    print(f"{task} {label(kind)}: {seconds[kind][-1]:.1f} s", flush=True)
            for name, digest in digests[1].items():
                print(f"  {name} sha256 {digest}")
            rows.append((task, {kind: min(times) for kind, times in seconds.items()},
                         all(digests[kind] == digests[1] for kind in kinds), len(digests[1])))
    finally:
        shutil.rmtree(work)
    print(f"load average after: {load_average()}\n")
    speedups = [(BEFORE, 1), (1, args.jobs), (BEFORE, args.jobs)] if args.before else [(1, args.jobs)]
    print("| task | " + " | ".join(label(kind) for kind in kinds) + " | "
          + " | ".join(f"{label(a)} → {label(b)}" for a, b in speedups) + " | same files (SHA-256) |")
    print("|---|" + "---|" * (len(kinds) + len(speedups) + 1))
    for task, best, same, files in rows:
        print(f"| {task} | " + " | ".join(f"{best[kind]:.1f} s" for kind in kinds) + " | "
              + " | ".join(f"{best[a] / best[b]:.2f}x" for a, b in speedups) + f" | {'yes' if same else 'NO'}, {files} files |")
    if not all(same for _, _, same, _ in rows):
        sys.exit("the builds wrote different files")


BEFORE = "before"  # the older checkout's build, in one process (it has no --jobs)


def label(kind: int | str) -> str:
    return "before" if kind == BEFORE else f"--jobs {kind}"


def timed_build(sources: list[str], language: str | None, task: str, kind: int | str, out: Path,
                before: Path | None) -> float:
    """Wall seconds of one `telly data build` in a new process: this checkout's with `--jobs kind`,
    or the older checkout's."""
    command = [sys.executable, "-m", "telly.cli", "data", "build", *sources, "--task", task, "--out", str(out),
               "--overwrite"]
    env = None
    if kind == BEFORE:
        env = {**os.environ, "PYTHONPATH": str(before.resolve() / "src")}
    else:
        command += ["--jobs", str(kind)]
    if language:
        command += ["--language", language]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def file_digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
