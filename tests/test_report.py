"""`telly report` on hand-made run folders."""

import json

import pytest

from telly import UserError
from telly.report import comparison_table, load_run


def make_run(folder, freeze, seconds, mrr, method="telly", task="code-search"):
    folder.mkdir()
    metrics = {"task": task, "method": method, "freeze": freeze, "selection_metric": "mrr",
               "test": {"mrr": mrr}, "zero_shot_test": {"mrr": 0.5}, "seconds_per_epoch": seconds,
               "params": {"total": 2_000_000, "trainable": 500_000, "percent_trainable": 25.0}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return load_run(folder)


def test_table_rows_and_speedups(tmp_path):
    runs = [make_run(tmp_path / "full", -1, 120.0, 0.7), make_run(tmp_path / "k3", 3, 40.0, 0.69),
            make_run(tmp_path / "lora", -1, 60.0, 0.65, method="lora")]
    rows = comparison_table(runs).splitlines()
    assert rows[0] == ("| run | variant | zero-shot mrr | mrr | trainable / total params | s/epoch | speedup vs full |")
    assert rows[2] == "| full | full | 0.5000 | 0.7000 | 0.50M / 2.00M (25.0%) | 120.0 | 1.00x |"
    assert rows[3] == "| k3 | K=3 | 0.5000 | 0.6900 | 0.50M / 2.00M (25.0%) | 40.0 | 3.00x |"
    assert rows[4] == "| lora | LoRA | 0.5000 | 0.6500 | 0.50M / 2.00M (25.0%) | 60.0 | 2.00x |"


def test_runs_of_different_tasks_are_refused(tmp_path):
    runs = [make_run(tmp_path / "a", -1, 1.0, 0.1), make_run(tmp_path / "b", -1, 1.0, 0.1, task="clone-detection")]
    with pytest.raises(UserError, match="runs of different tasks"):
        comparison_table(runs)
