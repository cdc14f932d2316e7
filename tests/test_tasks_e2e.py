"""Every task end to end through `telly finetune` on tiny random models and real stdlib code."""

import json
import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration,
)

from telly.cli import main
from telly.data import BUILDERS
from telly.tasks import TASKS

EMAIL = Path(sysconfig.get_paths()["stdlib"]) / "email"
K = 1


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer, byte_level_tokenizer):
    """Tiny random models saved as local folders: BERT and T5 with the real WordPiece tokenizer,
    GPT-2 and Llama with a byte-level BPE (it writes newlines, as theirs do)."""
    torch.manual_seed(0)
    vocab = tokenizer.vocab_size
    end = byte_level_tokenizer.eos_token_id
    built = {
        "bert": (BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=128)), tokenizer),
        "t5": (T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=16, num_heads=2,
                                                   num_layers=3, num_decoder_layers=2, pad_token_id=0,
                                                   decoder_start_token_id=0, eos_token_id=tokenizer.sep_token_id)),
               tokenizer),
        "gpt2": (GPT2LMHeadModel(GPT2Config(vocab_size=len(byte_level_tokenizer), n_embd=32, n_layer=3, n_head=2,
                                            n_positions=128, bos_token_id=end, eos_token_id=end)),
                 byte_level_tokenizer),
        "llama": (LlamaForCausalLM(LlamaConfig(vocab_size=len(byte_level_tokenizer), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                               max_position_embeddings=128, bos_token_id=end, eos_token_id=end,
                                               pad_token_id=end)),
                  byte_level_tokenizer),
    }
    folders = {}
    for name, (model, model_tokenizer) in built.items():
        folders[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(folders[name])
        model_tokenizer.save_pretrained(folders[name])
    return folders


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    folders = {}
    for task in ("clone-detection", "code-summarization", "code-generation", "code-completion"):
        folders[task] = tmp_path_factory.mktemp(task)
        BUILDERS[task]([EMAIL], folders[task], seed=0)
    return folders


def finetune(task, model_dir, data_dir, out, *extra):
    argv = ["finetune", "--task", task, "--model", str(model_dir), "--data", str(data_dir), "--out", str(out),
            "--freeze", str(K), "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--max-code-len", "64",
            "--max-nl-len", "12", "--beam-size", "2", "--decoder-layers", "2", "--max-train-examples", "48",
            "--max-eval-examples", "12", "--seed", "1", *extra]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


CASES = {
    # task, model, metric keys, new parts (no zero-shot), components
    "clone-detection/bert": ("clone-detection", "bert", {"precision", "recall", "f1", "threshold"}, True, {"encoder", "head"}),
    "code-summarization/bert": ("code-summarization", "bert", {"bleu"}, True, {"encoder", "decoder", "head"}),
    "code-summarization/t5": ("code-summarization", "t5", {"bleu"}, False, {"encoder", "decoder", "head"}),
    "code-generation/bert": ("code-generation", "bert", {"bleu", "exact_match"}, True, {"encoder", "decoder", "head"}),
    "code-completion/gpt2": ("code-completion", "gpt2", {"exact_match", "edit_similarity"}, False, {"body", "head"}),
    "code-completion/bert": ("code-completion", "bert", {"exact_match", "edit_similarity"}, True, {"body", "head"}),
    # Decoder-only: causal LMs on prompt → target, pooled hidden states for clones.
    "code-completion/llama": ("code-completion", "llama", {"exact_match", "edit_similarity"}, False, {"body", "head"}),
    "code-summarization/llama": ("code-summarization", "llama", {"bleu"}, False, {"body", "head"}),
    "code-generation/gpt2": ("code-generation", "gpt2", {"bleu", "exact_match"}, False, {"body", "head"}),
    "clone-detection/llama": ("clone-detection", "llama", {"precision", "recall", "f1", "threshold"}, True,
                              {"encoder", "head"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_task_end_to_end(case, models, datasets, tmp_path):
    task, model_name, metric_keys, new_parts, components = CASES[case]
    metrics = finetune(task, models[model_name], datasets[task], tmp_path / "run")

    assert set(metrics["test"]) == metric_keys
    assert set(TASKS[task].metrics) == metric_keys - {"threshold"}  # what --select-by may name
    assert metrics["activation_cache"]  # every task and family runs from the cache at K >= 0
    assert metrics["pooling"] == {"clone-detection/llama": "last", "clone-detection/bert": "mean"}.get(case)
    assert (metrics["zero_shot_test"] is None) == new_parts
    assert set(metrics["params"]["components"]) == components
    parts = metrics["params"]["components"].values()
    assert sum(part["total"] for part in parts) == metrics["params"]["total"]
    assert sum(part["trainable"] for part in parts) == metrics["params"]["trainable"]
    for name, value in metrics["test"].items():
        upper = 1.0 if task == "clone-detection" else 100.0
        assert 0.0 <= value <= upper or name == "threshold", (name, value)
    losses = [epoch["train_loss"] for epoch in metrics["history"]]
    assert losses[1] < losses[0]  # the second pass over the same data fits it better
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_clone_test_threshold_is_the_best_valid_epochs(models, datasets, tmp_path):
    metrics = finetune("clone-detection", models["bert"], datasets["clone-detection"], tmp_path / "run")
    best = metrics["history"][metrics["best_epoch"] - 1]["valid"]
    assert metrics["test"]["threshold"] == best["threshold"]


def test_generation_run_is_reproducible(models, datasets, tmp_path):
    first = finetune("code-summarization", models["t5"], datasets["code-summarization"], tmp_path / "a")
    second = finetune("code-summarization", models["t5"], datasets["code-summarization"], tmp_path / "b")
    assert first["test"] == second["test"]
    assert [h["train_loss"] for h in first["history"]] == [h["train_loss"] for h in second["history"]]


def test_freeze_decoder_freezes_t5s_decoder(models, datasets, tmp_path):
    metrics = finetune("code-summarization", models["t5"], datasets["code-summarization"], tmp_path / "run",
                       "--freeze-decoder")
    assert metrics["params"]["components"]["decoder"]["trainable"] == 0
    assert metrics["params"]["components"]["encoder"]["trainable"] > 0


def test_code_longer_than_the_models_positions_is_truncated(models, datasets, tmp_path):
    # The tiny BERT has 128 positions; asking for 500 code tokens must not crash.
    argv = ["finetune", "--task", "clone-detection", "--model", str(models["bert"]), "--data",
            str(datasets["clone-detection"]), "--out", str(tmp_path / "run"), "--max-code-len", "500",
            "--max-train-examples", "8", "--max-eval-examples", "8", "--batch-size", "8"]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def other_language_datasets(tmp_path_factory, java_sources, ruby_sources):
    """Every task's data from the Java and Ruby sources written in conftest."""
    folders = {}
    for language, sources in (("java", java_sources), ("ruby", ruby_sources)):
        for task in ("code-search", "clone-detection", "code-summarization", "code-generation", "code-completion"):
            folders[task, language] = tmp_path_factory.mktemp(f"{task}-{language}")
            BUILDERS[task]([sources], folders[task, language], seed=0, language=language)
    return folders


OTHER_LANGUAGE_CASES = {
    # task, language, model, metric keys
    "code-search/ruby/bert": ("code-search", "ruby", "bert", {"mrr", "r@1", "r@5", "r@10"}),
    "clone-detection/java/bert": ("clone-detection", "java", "bert", {"precision", "recall", "f1", "threshold"}),
    "code-summarization/ruby/t5": ("code-summarization", "ruby", "t5", {"bleu"}),
    "code-generation/java/bert": ("code-generation", "java", "bert", {"bleu", "exact_match"}),
    "code-completion/java/gpt2": ("code-completion", "java", "gpt2", {"exact_match", "edit_similarity"}),
}


@pytest.mark.parametrize("case", list(OTHER_LANGUAGE_CASES))
def test_task_end_to_end_on_java_and_ruby(case, models, other_language_datasets, tmp_path):
    task, language, model_name, metric_keys = OTHER_LANGUAGE_CASES[case]
    metrics = finetune(task, models[model_name], other_language_datasets[task, language], tmp_path / "run")
    assert set(metrics["test"]) == metric_keys
    losses = [epoch["train_loss"] for epoch in metrics["history"]]
    assert losses[1] < losses[0]
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


@pytest.mark.parametrize("model_name, pooling", [("llama", "last"), ("bert", "mean")])
def test_code_search_pools_as_the_family_says_and_records_it(model_name, pooling, models, email_corpus, tmp_path):
    metrics = finetune("code-search", models[model_name], email_corpus, tmp_path / "run")
    assert metrics["pooling"] == pooling
    assert set(metrics["test"]) == {"mrr", "r@1", "r@5", "r@10"}
