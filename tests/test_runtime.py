"""Device and precision: chosen once, checked at the boundary, used by the loop; the loop moves batches."""

import json
import math

import pytest
import torch
from accelerate import PartialState

from telly import FinetuneConfig
from telly.checkpoints import TrainingState, load_latest_checkpoint, save_checkpoint
from telly.cli import main
from telly.errors import UserError
from telly.runtime import CPU, Runtime, resolve_runtime
from telly.sweep import _ray_resources
from telly.tasks.search import CodeSearchTask
from telly import train as train_module

TASKS = ("code-search", "clone-detection", "code-summarization", "code-generation", "code-completion")


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    import sysconfig
    from pathlib import Path

    from telly.data import BUILDERS

    email = Path(sysconfig.get_paths()["stdlib"]) / "email"
    folders = {}
    for task in TASKS:
        folders[task] = tmp_path_factory.mktemp(task)
        BUILDERS[task]([email], folders[task], seed=0)
    return folders


def finetune_argv(task, model_dir, data_dir, out, *extra):
    return ["finetune", "--task", task, "--model", str(model_dir), "--data", str(data_dir), "--out", str(out),
            "--freeze", "1", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--max-code-len", "48",
            "--max-nl-len", "12", "--beam-size", "2", "--decoder-layers", "1", "--max-train-examples", "32",
            "--max-eval-examples", "8", "--seed", "1", *extra]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_and_evaluates_under_bf16(task, tiny_bert_dir, task_data, tmp_path):
    assert main(finetune_argv(task, tiny_bert_dir, task_data[task], tmp_path / "run", "--mixed-precision", "bf16")) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["device"], metrics["precision"]) == ("cpu", "bf16")
    assert metrics["peak_device_memory_mb"] is None  # no CUDA here
    losses = [entry["train_loss"] for entry in metrics["history"]]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert metrics["test"] and all(math.isfinite(value) for value in metrics["test"].values())


def test_bf16_autocast_really_runs_the_model_in_bf16(tiny_bert_dir, task_data, tmp_path):
    """The same run in float32 and under bf16: close losses, but not equal (bf16 rounds)."""
    plain, mixed = tmp_path / "fp32", tmp_path / "bf16"
    assert main(finetune_argv("code-search", tiny_bert_dir, task_data["code-search"], plain)) == 0
    assert main(finetune_argv("code-search", tiny_bert_dir, task_data["code-search"], mixed,
                              "--mixed-precision", "bf16")) == 0
    losses = [[h["train_loss"] for h in json.loads((out / "metrics.json").read_text())["history"]]
              for out in (plain, mixed)]
    assert losses[0] != losses[1]
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda"], "--device cuda: no CUDA GPU is available here"),
    (["--device", "cuda:1"], "--device cuda:1: no CUDA GPU is available here"),
    (["--device", "tpu"], "--device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["--device", "cpu", "--mixed-precision", "fp16"], "--mixed-precision fp16 needs a GPU"),
    (["--mixed-precision", "fp8"], "--mixed-precision must be one of no, bf16, fp16, got 'fp8'"),
])
def test_a_device_or_precision_the_machine_cannot_do_is_one_line(argv, message, tiny_bert_dir, task_data, tmp_path,
                                                                capsys):
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    out = tmp_path / "run"
    assert main(finetune_argv("code-search", tiny_bert_dir, task_data["code-search"], out, *argv)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("telly: error: ") and message in error
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("command", [["probe", "--out", "OUT"], ["compare", "--run", "RUN"]])
def test_the_study_commands_check_the_device_too(command, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    argv = [str(tmp_path / part) if part.isupper() else part for part in command]
    assert main([*argv, "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU is available here" in capsys.readouterr().err


def test_explicit_cpu_and_precision_resolve_as_asked():
    runtime = resolve_runtime("cpu", "bf16")
    assert runtime == Runtime(torch.device("cpu"), "bf16")
    layer = torch.nn.Linear(4, 4)
    with runtime.autocast():
        assert layer(torch.ones(2, 4)).dtype == torch.bfloat16
    with CPU.autocast():
        assert layer(torch.ones(2, 4)).dtype == torch.float32
    assert not runtime.grad_scaler().is_enabled()  # loss scaling is for fp16 only


def test_infer_moves_each_batch_and_returns_the_results_in_order():
    seen = []

    def compute(batch):
        seen.append(torch.is_grad_enabled())
        return {"sum": batch["x"].sum(dim=1), "texts": batch["texts"]}

    batches = [{"x": torch.arange(6.0).view(2, 3), "texts": ["a", "b"]}, {"x": torch.ones(1, 3), "texts": ["c"]}]
    results = CPU.infer(compute, batches, "test")
    assert [r["sum"].tolist() for r in results] == [[3.0, 12.0], [3.0]]
    assert [r["texts"] for r in results] == [["a", "b"], ["c"]]
    assert seen == [False, False]  # inference: no autograd graph


class MovingRuntime(Runtime):
    """A runtime that records every batch it moved, to show the loop moves what a task collates."""

    moved: list = []

    def move(self, batch):
        moved = super().move(batch)
        MovingRuntime.moved.append(moved)
        return moved


class CpuCollatingSearch(CodeSearchTask):
    """Collates CPU tensors, as every task does; its loss checks that the batch it gets was moved."""

    losses_on_moved_batches = 0

    def loss(self, model, batch):
        assert any(batch is moved for moved in MovingRuntime.moved), "the loop handed on an unmoved batch"
        assert all(tensor.device == self.runtime.device for tensor in batch.values())
        CpuCollatingSearch.losses_on_moved_batches += 1
        return super().loss(model, batch)


def test_the_loop_moves_each_training_batch_to_the_runtime_device(tiny_bert_dir, email_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "get_task", lambda name: CpuCollatingSearch)
    config = FinetuneConfig(task="code-search", data=str(email_corpus), out=str(tmp_path), model=str(tiny_bert_dir),
                            freeze=-1, batch_size=8, max_train_examples=24, max_eval_examples=8, max_code_len=32)
    (tmp_path / "best").mkdir()
    runtime = MovingRuntime(torch.device("cpu"))
    metrics = train_module.train(config, tmp_path, PartialState(cpu=True), runtime)
    assert CpuCollatingSearch.losses_on_moved_batches == 3  # every training step's batch
    assert metrics.steps == 3 and metrics.device == "cpu"


def test_an_fp16_loss_scalers_state_survives_a_checkpoint(tmp_path):
    parameter = torch.nn.Parameter(torch.ones(2))
    model = torch.nn.Module()
    model.weight = parameter
    optimizer = torch.optim.AdamW([parameter])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    scaler._lazy_init_scale_growth_tracker(torch.device("cpu"))
    scaler._growth_tracker.fill_(3)
    save_checkpoint(tmp_path, model, optimizer, scheduler, TrainingState(global_step=1), scaler)
    restored = torch.amp.GradScaler("cpu")
    assert load_latest_checkpoint(tmp_path, model, optimizer, scheduler, restored).global_step == 1
    assert restored.state_dict() == scaler.state_dict()
    assert (restored.get_scale(), restored.state_dict()["_growth_tracker"]) == (1024.0, 3)


def test_ray_gives_each_variant_a_gpu_when_there_are_gpus():
    gpus = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}}]
    assert _ray_resources(gpus, "auto") == {"num_gpus": 1, "num_cpus": 8}
    assert _ray_resources(gpus, "cpu") == {"num_cpus": 16.0}
    cpus_only = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    assert _ray_resources(cpus_only, "auto") == {"num_cpus": 2.0}


def test_a_config_refuses_an_unknown_precision_at_once():
    with pytest.raises(UserError, match="--mixed-precision must be one of no, bf16, fp16"):
        FinetuneConfig(task="code-search", data="-", out="-", mixed_precision="half")
