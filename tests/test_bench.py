"""The benchmark scripts stay runnable: their imports follow the package's (their numbers are in the README)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_speed_benchmark_starts():
    shown = subprocess.run([sys.executable, str(BENCH / "finetune_speed.py"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "--max-train-examples" in shown.stdout
