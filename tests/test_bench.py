"""The benchmark scripts stay runnable: their imports follow the package's (their numbers are in the README)."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_speed_benchmark_starts():
    shown = subprocess.run([sys.executable, str(BENCH / "finetune_speed.py"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "--max-train-examples" in shown.stdout and "--mixed-precision" in shown.stdout


def test_the_gpu_check_runs_every_task_in_both_precisions_on_the_cpu(tiny_bert_dir, tmp_path):
    """What the GPU check prints on a GPU, on the CPU with a tiny model: ten task rows, all passing."""
    checked = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--model",
                              str(tiny_bert_dir), "--steps", "2", "--skip-speed"], capture_output=True, text=True,
                             timeout=1200)
    assert checked.returncode == 0, checked.stderr[-3000:]
    rows = [line for line in checked.stdout.splitlines() if line.startswith("| code-") or line.startswith("| clone-")]
    tasks = ("code-search", "clone-detection", "code-summarization", "code-generation", "code-completion")
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == [task for task in tasks for _ in range(2)]
    assert [row.split(" | ")[2] for row in rows] == ["no", "bf16"] * 5
    assert all(row.endswith("| yes |") for row in rows)


def test_the_decoder_benchmark_starts():
    shown = subprocess.run([sys.executable, str(BENCH / "decoder_completion.py"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "--ks" in shown.stdout and "--max-eval-examples" in shown.stdout


def test_the_evaluation_benchmark_times_full_and_cached_evaluations_of_the_same_weights(tiny_bert_dir, email_corpus):
    shown = subprocess.run([sys.executable, str(BENCH / "eval_speed.py"), "--model", str(tiny_bert_dir), "--data",
                            str(email_corpus), "--device", "cpu", "--repeats", "2", "--max-eval-examples", "16"],
                           capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr[-3000:]
    rows = [line.split(" | ") for line in shown.stdout.splitlines() if line.startswith(("| full", "| Telly"))]
    assert [row[0] for row in rows] == ["| full (K=-1)", "| Telly-2 + cache"]  # half of the tiny model's 4 layers
    assert rows[0][-1] == rows[1][-1]  # the selection metric: the same pre-trained weights


def test_the_data_build_benchmark_starts():
    shown = subprocess.run([sys.executable, str(BENCH / "data_build_speed.py"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "--jobs" in shown.stdout and "--tasks" in shown.stdout


def test_the_cache_fill_benchmark_finds_the_same_states_in_two_checkouts(tiny_bert_dir, email_corpus):
    """This checkout against itself: every K's two caches replay the same loss."""
    shown = subprocess.run([sys.executable, str(BENCH / "cache_fill_speed.py"), "--before", str(BENCH.parent),
                            "--task", "code-search", "--model", str(tiny_bert_dir), "--data", str(email_corpus),
                            "--ks", "0,2", "--rounds", "1", "--max-train-examples", "24"],
                           capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr[-3000:]
    rows = [line.split(" | ") for line in shown.stdout.splitlines() if line.startswith("| ") and "K |" not in line]
    assert [row[0] for row in rows] == ["| 0", "| 2"]
    assert all(row[-1] == "yes |" for row in rows)
