"""--time-budget: train for a fixed training time, validate at equal fractions of it."""

import json
import math

import pytest
import torch

import telly.train
from telly.checkpoints import TrainingState
from telly.cli import main
from telly.config import FinetuneConfig, TimeBudgetOptions
from telly.train import TimeBudget, TrainingClock


class StepClock:
    """Training time that advances by one second per training step, whatever the machine's speed;
    `interrupt_at` makes that step end in Ctrl-C."""

    def __init__(self, monkeypatch):
        self.seconds, self.steps, self.interrupt_at = 0.0, 0, None
        real_step = telly.train.train_step

        def step(run, indices):
            if self.steps + 1 == self.interrupt_at:
                raise KeyboardInterrupt
            self.steps += 1
            self.seconds += 1.0
            return real_step(run, indices)

        monkeypatch.setattr(telly.train, "train_step", step)
        monkeypatch.setattr(telly.train, "TrainingClock", lambda: TrainingClock(now=lambda: self.seconds))


def budget_argv(model, data, out, budget, marks, *extra):
    return ["finetune", "--task", "code-search", "--model", str(model), "--data", str(data), "--out", str(out),
            "--freeze", "1", "--batch-size", "8", "--max-code-len", "32", "--max-nl-len", "16", "--max-eval-examples", "20",
            "--time-budget", str(budget), "--time-marks", str(marks), *extra]


@pytest.mark.parametrize("marks, validated_at", [(3, [1, 2, 3]), (6, [1, 2, 3])])
def test_a_run_trains_for_its_budget_and_validates_at_each_mark(tiny_bert_dir, email_corpus, tmp_path, monkeypatch,
                                                               marks, validated_at):
    # With 6 marks a step of 1 s passes a mark and a half: it validates once, and the run ends on time.
    StepClock(monkeypatch)
    out = tmp_path / "budget"
    budget = 3.0
    assert main(budget_argv(tiny_bert_dir, email_corpus, out, budget, marks)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert [entry["step"] for entry in history] == validated_at and metrics["steps"] == validated_at[-1]
    assert [entry["train_seconds"] for entry in history] == [float(step) for step in validated_at]
    steps_per_epoch = math.ceil(metrics["examples"]["train"] / 8)
    assert metrics["epochs_trained"] == pytest.approx(metrics["steps"] / steps_per_epoch)
    assert len(metrics["epoch_seconds"]) == int(metrics["epochs_trained"])  # finished epochs only
    assert metrics["train_seconds"] == history[-1]["train_seconds"] == budget
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


def test_an_interrupted_budget_run_resumes_with_the_time_it_had_spent(tiny_bert_dir, email_corpus, tmp_path,
                                                                     monkeypatch):
    clock = StepClock(monkeypatch)
    out = tmp_path / "interrupted"
    argv = budget_argv(tiny_bert_dir, email_corpus, out, 10, 2, "--checkpoint-every", "3")
    clock.interrupt_at = 8  # after the checkpoint of step 6 (and the validation at 5 s)
    assert main(argv) == 130
    saved = json.loads((out / "checkpoints" / "step-00000006" / "state.json").read_text())["state"]
    assert saved["train_seconds"] == 6.0
    clock.interrupt_at, clock.seconds = None, 0.0  # a new process: its clock starts again
    assert main([*argv, "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(entry["step"], entry["train_seconds"]) for entry in metrics["history"]] == [(5, 5.0), (10, 10.0)]
    assert metrics["steps"] == 10  # went on from the checkpoint, not from the start


def test_a_run_ends_when_its_time_is_spent_whatever_the_number_of_marks():
    # With more marks than steps, every step passes one; a budget of 1 s and 4,000,000 marks
    # trained for minutes, validating after every step, until 4,000,000 validations were done.
    policy = TimeBudget(seconds=1.0, marks=4_000_000)
    assert not policy.finished(TrainingState(evaluations_done=3, train_seconds=0.9))
    assert policy.finished(TrainingState(evaluations_done=4, train_seconds=1.05))
    assert TimeBudget(seconds=10.0, marks=2).finished(TrainingState(evaluations_done=2, train_seconds=9.99))
