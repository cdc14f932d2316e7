"""--time-budget: train for a fixed training time, validate at equal fractions of it."""

import json

import pytest
import torch
from conftest import SECONDS_PER_STEP, start_and_kill

from telly.checkpoints import TrainingState
from telly.cli import main
from telly.config import FinetuneConfig, TimeBudgetOptions
from telly.train import TimeBudget, TrainingClock


def budget_argv(model_dir, data_dir, out, budget, marks, *extra):
    return ["finetune", "--task", "code-search", "--model", str(model_dir), "--data", str(data_dir), "--out", str(out),
            "--freeze", "1", "--batch-size", "8", "--max-code-len", "32", "--max-nl-len", "16", "--max-train-examples",
            "40", "--max-eval-examples", "20", "--time-budget", str(budget), "--time-marks", str(marks), *extra]


def test_a_run_trains_for_its_budget_and_validates_at_each_mark(tiny_bert_dir, email_corpus, tmp_path, step_clock):
    """Training time counted in steps of 0.25 s: a 3 s budget in 3 marks validates after steps 4, 8 and 12."""
    out = tmp_path / "budget"
    assert main(budget_argv(tiny_bert_dir, email_corpus, out, 3.0, 3)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert [entry["step"] for entry in history] == [4, 8, 12]
    assert [entry["train_seconds"] for entry in history] == [1.0, 2.0, 3.0]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]  # 40 examples: 5 steps an epoch
    assert (metrics["steps"], metrics["train_seconds"], metrics["epochs_trained"]) == (12, 3.0, 2.4)
    assert metrics["epoch_seconds"] == [1.25, 1.25]  # finished epochs only
    assert metrics["best_epoch"] in {1, 2, 3}


def test_with_more_marks_than_steps_each_step_validates_once_and_the_run_ends_on_time(tiny_bert_dir, email_corpus,
                                                                                       tmp_path, step_clock):
    """24 marks in 3 s of 0.25 s steps: every step passes two marks, validates once, and step 12 ends the run."""
    out = tmp_path / "many-marks"
    assert main(budget_argv(tiny_bert_dir, email_corpus, out, 3.0, 24)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [entry["step"] for entry in metrics["history"]] == list(range(1, 13))
    assert (metrics["steps"], metrics["train_seconds"]) == (12, 3.0)


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


def test_the_clock_counts_only_while_running(monkeypatch):
    readings = iter([10.0, 12.5, 100.0, 101.0])
    monkeypatch.setattr(TrainingClock, "source", staticmethod(lambda: next(readings)))
    clock = TrainingClock()
    clock.seconds_before = 5.0
    assert clock.seconds == 5.0  # stopped: the source is not even read
    clock.start()  # 10.0
    assert clock.stop() == 2.5  # 12.5
    assert clock.seconds == 7.5
    clock.start()  # 100.0
    assert clock.seconds == 8.5  # 101.0: the running lap counts


def test_an_interrupted_budget_run_resumes_with_the_time_it_had_spent(tiny_bert_dir, email_corpus, tmp_path, step_clock):
    """Killed after step 10 of a 6 s budget (24 steps of 0.25 s), the resumed run goes on with the time it had spent."""
    out = tmp_path / "killed"
    argv = budget_argv(tiny_bert_dir, email_corpus, out, 6.0, 2, "--checkpoint-every", "5")
    start_and_kill(argv, out, "step-00000010", step_clock=True)
    saved = [json.loads(path.read_text())["state"] for path in sorted((out / "checkpoints").glob("step-*/state.json"))]
    assert saved and all(state["train_seconds"] == state["global_step"] * SECONDS_PER_STEP for state in saved)
    assert main([*argv, "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(entry["step"], entry["train_seconds"]) for entry in metrics["history"]] == [(12, 3.0), (24, 6.0)]
    assert f"resuming from step-{saved[-1]['global_step']:08d}" in (out / "log.txt").read_text()


def test_a_run_ends_when_its_time_is_spent_whatever_the_number_of_marks():
    # With more marks than steps, every step passes one; a budget of 1 s and 4,000,000 marks
    # trained for minutes, validating after every step, until 4,000,000 validations were done.
    policy = TimeBudget(seconds=1.0, marks=4_000_000)
    assert not policy.finished(TrainingState(evaluations_done=3, train_seconds=0.9))
    assert policy.finished(TrainingState(evaluations_done=4, train_seconds=1.05))
    assert TimeBudget(seconds=10.0, marks=2).finished(TrainingState(evaluations_done=2, train_seconds=9.99))
