"""`telly finetune` under `accelerate launch`: two CPU processes train as one process does."""

import json
import os
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from telly.cli import main
from telly.data.clones import build_clones

SCRIPTS = Path(sys.executable).parent


@pytest.fixture(scope="module")
def no_dropout_bert_dir(tmp_path_factory, tokenizer):
    """Without dropout the random numbers drawn do not depend on how a batch is split."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_give_the_one_process_losses_and_metrics(no_dropout_bert_dir, tmp_path):
    data = tmp_path / "clones"
    build_clones([Path(sysconfig.get_paths()["stdlib"]) / "email"], data, seed=0)
    argv = ["finetune", "--task", "clone-detection", "--model", str(no_dropout_bert_dir), "--data", str(data),
            "--freeze", "0", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--max-code-len", "48",
            "--max-train-examples", "64", "--max-eval-examples", "40", "--seed", "5"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    launched = launch_two_processes([*argv, "--out", str(tmp_path / "two")])
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert [h["train_loss"] for h in two["history"]] == pytest.approx([h["train_loss"] for h in one["history"]], abs=1e-5)
    assert two["test"] == pytest.approx(one["test"], abs=1e-5)
    # Only the main process writes and reports.
    assert launched.stdout.count("wrote ") == 1
    assert (tmp_path / "two" / "log.txt").read_text().count("data: 64 train") == 1
    # Resuming the finished run returns its metrics in every process (none waits for the others).
    resumed = launch_two_processes([*argv, "--out", str(tmp_path / "two"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count(f"test f1 {two['test']['f1']:.4f}") == 1


def launch_two_processes(telly_argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPTS / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         str(SCRIPTS / "telly"), *telly_argv],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
