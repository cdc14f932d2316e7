"""Kill a run at any moment, resume it, and get the uninterrupted run's metrics; damaged checkpoints are skipped."""

import json
import re
import signal

import pytest
import torch
from safetensors import safe_open

import telly.train as train_module
from telly.checkpoints import CHECKPOINTS, TrainingState, load_latest_checkpoint, save_checkpoint
from telly.cli import main
from telly.run_folder import SPILL_FOLDER

from conftest import start_and_kill


def finetune_argv(model_dir, data_dir, out, *extra):
    return [
        "finetune", "--task", "code-search", "--model", str(model_dir), "--data", str(data_dir), "--out", str(out),
        "--freeze", "1", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--max-code-len", "48",
        "--max-nl-len", "24", "--max-eval-examples", "40", "--seed", "5", *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert_dir, email_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    assert main(finetune_argv(tiny_bert_dir, email_corpus, out)) == 0
    return json.loads((out / "metrics.json").read_text())


def same_results(resumed: dict, whole: dict) -> None:
    assert resumed["test"] == whole["test"]
    assert resumed["zero_shot_test"] == whole["zero_shot_test"]
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in whole["history"]]
    assert [h["valid"] for h in resumed["history"]] == [h["valid"] for h in whole["history"]]


def test_sigkill_mid_epoch_then_resume_gives_the_same_metrics(tiny_bert_dir, email_corpus, tmp_path, uninterrupted):
    out = tmp_path / "killed"
    argv = finetune_argv(tiny_bert_dir, email_corpus, out, "--checkpoint-every", "5")
    assert start_and_kill(argv, out, "step-00000010") == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    assert main([*argv, "--resume"]) == 0
    same_results(json.loads((out / "metrics.json").read_text()), uninterrupted)
    assert "resuming from step-" in (out / "log.txt").read_text()
    assert not (out / CHECKPOINTS).exists()  # a finished run keeps metrics.json and best/ only


def test_ctrl_c_then_resume_gives_the_same_metrics(tiny_bert_dir, email_corpus, tmp_path, uninterrupted):
    out = tmp_path / "interrupted"
    argv = finetune_argv(tiny_bert_dir, email_corpus, out, "--checkpoint-every", "7")
    assert start_and_kill(argv, out, "step-00000007", signal.SIGINT) == 130
    assert main([*argv, "--resume"]) == 0
    same_results(json.loads((out / "metrics.json").read_text()), uninterrupted)


class InterruptedWhenCollected:
    def __del__(self):
        # The handler runs inside this finalizer, and Python drops the KeyboardInterrupt it raises.
        signal.raise_signal(signal.SIGINT)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped KeyboardInterrupt
def test_a_ctrl_c_whose_interrupt_python_drops_still_stops_the_run(tiny_bert_dir, email_corpus, tmp_path, monkeypatch):
    """A Ctrl-C landing while a finalizer runs, whose KeyboardInterrupt Python drops (the run would go
    on to its end and exit 0), stops training at the next step."""
    real_step, steps = train_module.train_step, []

    def step_then_interrupt_at_step_3(run, indices):
        steps.append(len(steps) + 1)
        if len(steps) == 3:
            InterruptedWhenCollected()  # collected at once: its finalizer runs here
        return real_step(run, indices)

    monkeypatch.setattr(train_module, "train_step", step_then_interrupt_at_step_3)
    assert main(finetune_argv(tiny_bert_dir, email_corpus, tmp_path / "run")) == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert steps == [1, 2, 3]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("dropped", ["before the test set is scored", "after the run is written"])
def test_a_dropped_ctrl_c_outside_training_ends_the_command_as_interrupted(dropped, tiny_bert_dir, email_corpus, tmp_path,
                                                                           monkeypatch):
    """Before scoring the test set, the next batch of inference stops the command (no metrics.json);
    where no loop checks any more, the command still ends as interrupted, with exit code 130."""
    write_test_scores = train_module.test_and_write

    def interrupted_around_test_and_write(*args):
        if dropped == "before the test set is scored":
            InterruptedWhenCollected()
        metrics = write_test_scores(*args)
        if dropped == "after the run is written":
            InterruptedWhenCollected()
        return metrics

    monkeypatch.setattr(train_module, "test_and_write", interrupted_around_test_and_write)
    out = tmp_path / "run"
    assert main(finetune_argv(tiny_bert_dir, email_corpus, out, "--epochs", "1")) == 130
    assert (out / "metrics.json").exists() == (dropped == "after the run is written")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture(autouse=True)
def python_handles_ctrl_c():
    """Python's SIGINT handler, as in a terminal, also when the tests were started in the background
    (`command &` ignores SIGINT, and the ignoring is inherited)."""
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, started_with)


def test_a_resumed_run_reuses_the_spilled_activation_cache(tiny_bert_dir, email_corpus, tmp_path, uninterrupted):
    out = tmp_path / "spilled"
    argv = finetune_argv(tiny_bert_dir, email_corpus, out, "--checkpoint-every", "5", "--cache-memory-mb", "1")
    start_and_kill(argv, out, "step-00000005")
    spilled = 0
    for shard in (out / SPILL_FOLDER).rglob("*.safetensors"):
        with safe_open(shard, framework="pt") as states:
            spilled += len(states.keys())
    assert main([*argv, "--resume"]) == 0
    fills = re.findall(r"activation cache: (\d+) sequences computed, (\d+) stored already", (out / "log.txt").read_text())
    (first_computed, first_reused), (computed, reused) = [(int(a), int(b)) for a, b in fills]
    assert first_reused == 0 and 0 < spilled < first_computed
    assert (computed, reused) == (first_computed - spilled, spilled)  # only the states kept in memory are computed
    same_results(json.loads((out / "metrics.json").read_text()), uninterrupted)
    assert not (out / SPILL_FOLDER).exists()  # a finished run removes its spilled states


def test_a_damaged_checkpoint_is_reported_and_the_previous_one_used(tiny_bert_dir, email_corpus, tmp_path, uninterrupted, caplog):
    out = tmp_path / "damaged"
    argv = finetune_argv(tiny_bert_dir, email_corpus, out, "--checkpoint-every", "4")
    start_and_kill(argv, out, "step-00000012")
    newest, previous = sorted((out / CHECKPOINTS).glob("step-*"), reverse=True)[:2]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a torn write
    assert main([*argv, "--resume"]) == 0
    log = (out / "log.txt").read_text()
    assert f"checkpoint {newest.name} is damaged" in log and f"resuming from {previous.name}" in log
    same_results(json.loads((out / "metrics.json").read_text()), uninterrupted)


def test_resume_of_a_finished_run_returns_its_metrics(tiny_bert_dir, email_corpus, tmp_path):
    out = tmp_path / "done"
    argv = finetune_argv(tiny_bert_dir, email_corpus, out, "--epochs", "1")
    assert main(argv) == 0
    before = (out / "metrics.json").read_bytes()
    assert main([*argv, "--resume"]) == 0
    assert (out / "metrics.json").read_bytes() == before


def test_resume_refuses_other_settings(tiny_bert_dir, email_corpus, tmp_path, capsys):
    out = tmp_path / "changed"
    argv = finetune_argv(tiny_bert_dir, email_corpus, out, "--epochs", "1")
    assert main(argv) == 0
    (out / "metrics.json").unlink()  # as if it had been interrupted
    assert main([*finetune_argv(tiny_bert_dir, email_corpus, out, "--epochs", "1", "--lr", "5e-4"), "--resume"]) == 2
    assert "lr: 0.001 -> 0.0005" in capsys.readouterr().err


def test_checkpoint_restores_model_optimizer_scheduler_and_random_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    state = TrainingState(epoch=2, step_in_epoch=1, global_step=3, losses_since_evaluation=[0.5], best_score=0.25)
    save_checkpoint(tmp_path, model, optimizer, scheduler, state)
    expected_next = torch.rand(3)
    expected_weights = {name: p.clone() for name, p in model.state_dict().items()}

    torch.manual_seed(99)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    fresh[0].load_state_dict(model[0].state_dict())  # the frozen part comes from the pre-trained weights
    fresh[0].weight.requires_grad_(False)
    fresh_optimizer = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda step: 1 / (step + 1))
    restored = load_latest_checkpoint(tmp_path, fresh, fresh_optimizer, fresh_scheduler)

    assert restored == state
    assert all(torch.equal(p, expected_weights[name]) for name, p in fresh.state_dict().items())
    assert torch.equal(torch.rand(3), expected_next)
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    for old, new in zip(optimizer.state.values(), fresh_optimizer.state.values()):
        assert all(torch.equal(old[key], new[key]) for key in ("exp_avg", "exp_avg_sq", "step"))


def test_temporary_files_of_interrupted_writes_are_removed_at_resume_and_at_finish(tiny_bert_dir, email_corpus,
                                                                                   tmp_path, monkeypatch):
    import telly.train

    real_step = telly.train.train_step
    steps = []

    def interrupt_after(count):
        def step(run, indices):
            if len(steps) == count:
                raise KeyboardInterrupt
            steps.append(indices)
            return real_step(run, indices)
        return step

    def leave_temporaries():  # what a kill while writing the best model or a checkpoint leaves
        (out / "best" / ".tmpa1B2c3").write_bytes(b"x" * 1000)  # safetensors' own temporary file
        (out / "best" / ".model.safetensors.4242.tmp").write_bytes(b"x" * 1000)
        (out / CHECKPOINTS / ".step-00000099.4242.tmp").mkdir(exist_ok=True)
        (out / ".metrics.json.4242.tmp").write_text("{")

    def temporaries():
        return sorted(path.name for path in out.rglob(".*"))

    out = tmp_path / "run"
    argv = finetune_argv(tiny_bert_dir, email_corpus, out, "--max-train-examples", "8")
    monkeypatch.setattr(telly.train, "train_step", interrupt_after(3))  # in epoch 2, after the first checkpoint
    assert main(argv) == 130
    leave_temporaries()
    monkeypatch.setattr(telly.train, "train_step", interrupt_after(3))  # resumed, interrupted before its first step
    assert main([*argv, "--resume"]) == 130
    assert temporaries() == []

    def step_among_temporaries(run, indices):  # a kill's leftovers appear while the run goes on
        leave_temporaries()
        return real_step(run, indices)

    monkeypatch.setattr(telly.train, "train_step", step_among_temporaries)
    assert main([*argv, "--resume"]) == 0
    assert temporaries() == []
