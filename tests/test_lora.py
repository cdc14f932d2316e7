"""The LoRA baseline trains only the adapters (and the task's new parts)."""

import json

import torch
from safetensors.torch import load_file
from transformers import BertModel

from telly.cli import main


def run(task, model_dir, data_dir, out):
    argv = ["finetune", "--task", task, "--model", str(model_dir), "--data", str(data_dir), "--out", str(out),
            "--method", "lora", "--lora-rank", "4", "--epochs", "1", "--batch-size", "8", "--lr", "1e-2",
            "--max-code-len", "48", "--max-nl-len", "24", "--max-train-examples", "32", "--max-eval-examples", "8"]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_lora_trains_only_the_adapters(tiny_bert_dir, email_corpus, tmp_path):
    metrics = run("code-search", tiny_bert_dir, email_corpus, tmp_path / "run")
    best = load_file(tmp_path / "run" / "best" / "model.safetensors")
    adapters = {name: value for name, value in best.items() if "lora_" in name}
    # query and value of each of the 4 layers, A (4 x 32) and B (32 x 4): 4 * 2 * 256.
    assert sum(value.numel() for value in adapters.values()) == 4 * 2 * (4 * 32 + 32 * 4)
    assert metrics["params"]["trainable"] == sum(value.numel() for value in adapters.values())
    assert metrics["method"] == "lora" and metrics["activation_cache"] is False

    def stored_name(name):
        """PEFT moves an adapted layer's own weights to `<layer>.base_layer.<weight>`."""
        plain = f"encoder.{name}"
        layer, _, weight = plain.rpartition(".")
        return plain if plain in best else f"{layer}.base_layer.{weight}"

    pretrained = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    for name, value in pretrained.items():
        assert torch.equal(best[stored_name(name)], value), name  # every pre-trained weight untouched
    assert any(value.abs().sum() > 0 for name, value in adapters.items() if "lora_B" in name)  # B starts at 0


def test_lora_with_a_new_head_trains_adapters_and_head(tiny_bert_dir, tmp_path):
    import sysconfig
    from pathlib import Path

    from telly.data import BUILDERS

    data = tmp_path / "clones"
    BUILDERS["clone-detection"]([Path(sysconfig.get_paths()["stdlib"]) / "email"], data)
    metrics = run("clone-detection", tiny_bert_dir, data, tmp_path / "run")
    head = metrics["params"]["components"]["head"]
    assert head["trainable"] == head["total"] > 0
    assert metrics["params"]["components"]["encoder"]["trainable"] == 4 * 2 * (4 * 32 + 32 * 4)
