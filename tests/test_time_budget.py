"""--time-budget: train for a fixed training time, validate at equal fractions of it."""

import json
import math

import pytest
import torch
from conftest import start_and_kill

from telly.checkpoints import TrainingState
from telly.cli import main
from telly.config import FinetuneConfig, TimeBudgetOptions
from telly.train import TimeBudget, TrainingClock


def test_a_run_trains_for_its_budget_and_validates_at_each_mark(tiny_bert_dir, email_corpus, tmp_path):
    out = tmp_path / "budget"
    budget, marks = 3.0, 3
    assert main([
        "finetune", "--task", "code-search", "--model", str(tiny_bert_dir), "--data", str(email_corpus),
        "--out", str(out), "--freeze", "1", "--batch-size", "8", "--max-code-len", "32", "--max-nl-len", "16",
        "--max-eval-examples", "20", "--time-budget", str(budget), "--time-marks", str(marks),
    ]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history) == marks
    for number, entry in enumerate(history, start=1):
        assert entry["train_seconds"] >= budget * number / marks  # validated once the mark is reached
    steps = [entry["step"] for entry in history]
    assert steps == sorted(set(steps)) and steps[-1] == metrics["steps"]
    steps_per_epoch = math.ceil(metrics["examples"]["train"] / 8)
    assert metrics["epochs_trained"] == pytest.approx(metrics["steps"] / steps_per_epoch)
    assert len(metrics["epoch_seconds"]) == int(metrics["epochs_trained"])  # finished epochs only
    assert metrics["train_seconds"] == history[-1]["train_seconds"]
    assert metrics["best_epoch"] in {entry["epoch"] for entry in history}


@pytest.mark.parametrize("seconds, factor", [(0.0, 0.0), (5.0, 0.5), (10.0, 1.0), (55.0, 0.5), (100.0, 0.0), (150.0, 0.0)])
def test_the_learning_rate_warms_up_and_decays_over_the_budget(seconds, factor):
    config = FinetuneConfig(task="code-search", data="d", out="o", lr=1e-3, warmup_fraction=0.1,
                            time_budget=TimeBudgetOptions(seconds=100.0))
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=config.lr)
    clock = TrainingClock()
    schedule = TimeBudget(config.time_budget.seconds, config.time_budget.marks).schedule(optimizer, config.warmup_fraction,
                                                                                       clock)
    clock.seconds_before = seconds
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)


def test_the_clock_counts_only_while_running():
    clock = TrainingClock()
    clock.seconds_before = 5.0
    assert clock.seconds == 5.0
    clock.start()
    lap = clock.stop()
    assert lap >= 0 and clock.seconds == pytest.approx(5.0 + lap)


def test_an_interrupted_budget_run_resumes_with_the_time_it_had_spent(tiny_bert_dir, email_corpus, tmp_path):
    out = tmp_path / "killed"
    argv = ["finetune", "--task", "code-search", "--model", str(tiny_bert_dir), "--data", str(email_corpus),
            "--out", str(out), "--freeze", "1", "--batch-size", "8", "--max-code-len", "32", "--max-nl-len", "16",
            "--max-eval-examples", "20", "--time-budget", "3", "--time-marks", "2", "--checkpoint-every", "5"]
    start_and_kill(argv, out, "step-00000010")
    saved = json.loads(next((out / "checkpoints").glob("step-*/state.json")).read_text())["state"]
    assert saved["train_seconds"] > 0
    assert main([*argv, "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [entry["train_seconds"] >= 1.5 * number for number, entry in enumerate(metrics["history"], start=1)] == [True, True]
    assert metrics["steps"] > 10  # went on from the checkpoint, not from the start


def test_a_run_ends_when_its_time_is_spent_whatever_the_number_of_marks():
    # With more marks than steps, every step passes one; a budget of 1 s and 4,000,000 marks
    # trained for minutes, validating after every step, until 4,000,000 validations were done.
    policy = TimeBudget(seconds=1.0, marks=4_000_000)
    assert not policy.finished(TrainingState(evaluations_done=3, train_seconds=0.9))
    assert policy.finished(TrainingState(evaluations_done=4, train_seconds=1.05))
    assert TimeBudget(seconds=10.0, marks=2).finished(TrainingState(evaluations_done=2, train_seconds=9.99))
