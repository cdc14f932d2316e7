"""`telly export` and `telly.load_run` on runs of a tiny random BERT that fine-tuned on real stdlib code."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModel

import telly
from telly.cli import main
from telly.data import BUILDERS
from telly.runtime import CPU

EMAIL = Path(sysconfig.get_paths()["stdlib"]) / "email"
TRAINING = ["--batch-size", "16", "--lr", "1e-3", "--max-code-len", "64", "--max-nl-len", "32", "--max-train-examples",
            "48", "--max-eval-examples", "40", "--seed", "1"]


def finetune(out, task, model, data, *variant):
    argv = ["finetune", "--task", task, "--model", str(model), "--data", str(data), "--out", str(out), *TRAINING, *variant]
    assert main(argv) == 0
    return out


def export(run, out, *extra):
    assert main(["export", str(run), "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def search_run(tiny_bert_dir, email_corpus, tmp_path_factory):
    return finetune(tmp_path_factory.mktemp("runs") / "k1", "code-search", tiny_bert_dir, email_corpus, "--freeze", "1")


@pytest.fixture(scope="module")
def search_export(search_run, tmp_path_factory):
    return export(search_run, tmp_path_factory.mktemp("exports") / "k1")


def test_the_model_folder_loads_without_telly_and_holds_the_fine_tuned_weights(search_run, search_export):
    script = ("import sys, json\nsys.modules['telly'] = None  # import telly fails from here on\n"
              "from transformers import AutoModel\n"
              f"model = AutoModel.from_pretrained({str(search_export)!r})\n"
              "print(json.dumps([type(model).__name__, sum(p.numel() for p in model.parameters())]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    name, count = json.loads(result.stdout.splitlines()[-1])
    tuned = telly.load_run(search_run).pretrained_part
    assert name == "BertModel" and count == sum(p.numel() for p in tuned.parameters())
    exported = AutoModel.from_pretrained(search_export).state_dict()
    pretrained = AutoModel.from_pretrained(Path(json.loads((search_run / "config.json").read_text())["model"])).state_dict()
    changed = 0
    for name, tensor in tuned.state_dict().items():
        assert torch.equal(exported[name], tensor), name
        changed += not torch.equal(pretrained[name], tensor)
    assert changed > 0  # fine-tuning moved weights, and the export holds the moved ones


def test_sentence_transformers_gives_the_vectors_telly_evaluated_with(search_run, search_export, email_corpus):
    from sentence_transformers import SentenceTransformer

    loaded = telly.load_run(search_run)
    code = [example.code for example in loaded.task.read_split(email_corpus, "test")[:24]]  # real stdlib functions
    with torch.no_grad():
        expected = loaded.task.embed(loaded.model, code, loaded.config.max_code_len, "test code")
    vectors = SentenceTransformer(str(search_export), device="cpu").encode(code, convert_to_tensor=True)
    assert vectors.shape == expected.shape == (24, 32)
    assert torch.allclose(vectors, expected, atol=1e-5)
    pooling = json.loads((search_export / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_lasttoken"]  # metrics.json: "mean"


def test_the_model_card_has_the_metadata_and_the_facts(search_run, search_export, tiny_bert_dir):
    metrics = json.loads((search_run / "metrics.json").read_text())
    card = ModelCard.load(search_export / "README.md")
    assert card.data.base_model == str(tiny_bert_dir)
    assert {"telly", "code-search", "telly-1"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "sentence-similarity" and card.data.library_name == "sentence-transformers"
    assert card.data.datasets == [Path(json.loads((search_run / "config.json").read_text())["data"]).name]
    assert {result.metric_type: result.metric_value for result in card.data.eval_results} == metrics["test"]
    params = metrics["params"]
    assert f"trainable parameters: {params['trainable']:,} of {params['total']:,}" in card.text
    assert "- K = 1\n" in card.text
    assert f"telly finetune --task code-search --data {json.loads((search_run / 'config.json').read_text())['data']}" \
        in card.text and "--freeze 1 " in card.text and "--seed 1" in card.text


def test_a_clone_run_exports_its_classifier_beside_the_encoder(tiny_bert_dir, tmp_path):
    data = tmp_path / "clones"
    BUILDERS["clone-detection"]([EMAIL], data, seed=0)
    run = finetune(tmp_path / "clone", "clone-detection", tiny_bert_dir, data, "--freeze", "2")
    out = export(run, tmp_path / "export")
    model = telly.load_run(run, CPU).model
    parts = load_file(out / "task_parts.safetensors")
    assert set(parts) == {name for name in model.state_dict() if name.startswith("head.")}
    assert all(torch.equal(parts[name], model.state_dict()[name]) for name in parts)
    described = json.loads((out / "task_parts.json").read_text())
    assert described["task_model"] == "PairClassifier" and described["pretrained_part"] == "encoder"
    assert described["parts"]["head.0.weight"] == [32, 64] and described["tied_to_pretrained"] == {}
    encoder = AutoModel.from_pretrained(out).state_dict()
    assert all(torch.equal(encoder[name], tensor) for name, tensor in model.encoder.state_dict().items())
    assert not (out / "modules.json").exists()  # a sentence-transformers folder is code search's


def test_a_lora_run_exports_merged_and_as_a_peft_adapter(tiny_bert_dir, email_corpus, tmp_path):
    from peft import PeftModel

    run = finetune(tmp_path / "lora", "code-search", tiny_bert_dir, email_corpus, "--method", "lora", "--lora-rank", "4")
    out = export(run, tmp_path / "export", "--adapter")
    loaded = telly.load_run(run)
    batch = loaded.task.tokenize([e.code for e in loaded.task.read_split(email_corpus, "test")[:8]], 64)
    with torch.no_grad():
        telly_states = loaded.pretrained_part(**batch).last_hidden_state  # adapters unmerged, as telly trained them
        merged = AutoModel.from_pretrained(out).eval()
        assert not any("lora" in name for name in merged.state_dict())
        merged_states = merged(**batch).last_hidden_state
        adapted = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert_dir), out / "adapter").eval()
        adapter_states = adapted(**batch).last_hidden_state
        base_states = AutoModel.from_pretrained(tiny_bert_dir).eval()(**batch).last_hidden_state
    assert torch.allclose(merged_states, telly_states, atol=1e-5)
    assert torch.allclose(adapter_states, telly_states, atol=1e-5)
    assert not torch.allclose(base_states, telly_states, atol=1e-3)  # the adapters learned something
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_bert_dir)
    card = ModelCard.load(out / "README.md")
    assert "lora" in card.data.tags and "- K: none (LoRA)" in card.text and "rank 4 (alpha 16)" in card.text


def test_a_summarization_run_exports_its_new_decoder_with_the_tie_to_the_embeddings(tiny_bert_dir, tmp_path):
    BUILDERS["code-summarization"]([EMAIL], tmp_path / "data", seed=0)
    run = finetune(tmp_path / "summarize", "code-summarization", tiny_bert_dir, tmp_path / "data", "--freeze", "1",
                   "--decoder-layers", "1", "--beam-size", "2")
    out = export(run, tmp_path / "export")
    model = telly.load_run(run).model
    parts = load_file(out / "task_parts.safetensors")
    assert {name.split(".")[0] for name in parts} == {"decoder", "dense"}
    assert all(torch.equal(parts[name], model.state_dict()[name]) for name in parts)
    described = json.loads((out / "task_parts.json").read_text())
    assert described["task_model"] == "EncoderWithNewDecoder"
    assert described["tied_to_pretrained"] == {"lm_head.weight": "embeddings.word_embeddings.weight"}
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "feature-extraction"  # the folder is the encoder
    assert "new parts (decoder, dense) are in task_parts.safetensors" in card.text


def test_a_completion_run_exports_a_causal_lm(byte_level_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    end = byte_level_tokenizer.eos_token_id
    GPT2LMHeadModel(GPT2Config(vocab_size=len(byte_level_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                               bos_token_id=end, eos_token_id=end)).save_pretrained(tmp_path / "gpt2")
    byte_level_tokenizer.save_pretrained(tmp_path / "gpt2")
    BUILDERS["code-completion"]([EMAIL], tmp_path / "data", seed=0)
    run = finetune(tmp_path / "complete", "code-completion", tmp_path / "gpt2", tmp_path / "data", "--freeze", "1")
    out = export(run, tmp_path / "export")
    tuned = telly.load_run(run).pretrained_part
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([byte_level_tokenizer("def parse(text):\n    return", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, tuned(ids).logits, atol=1e-5)
    assert not (out / "task_parts.safetensors").exists()
    assert ModelCard.load(out / "README.md").data.pipeline_tag == "text-generation"


def test_a_decoder_search_run_exports_last_token_pooling(byte_level_tokenizer, email_corpus, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    end = byte_level_tokenizer.eos_token_id
    LlamaModel(LlamaConfig(vocab_size=len(byte_level_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, bos_token_id=end,
                           eos_token_id=end, pad_token_id=end)).save_pretrained(tmp_path / "llama")
    byte_level_tokenizer.save_pretrained(tmp_path / "llama")
    run = finetune(tmp_path / "search", "code-search", tmp_path / "llama", email_corpus, "--freeze", "0")
    assert json.loads((run / "metrics.json").read_text())["pooling"] == "last"
    out = export(run, tmp_path / "export")
    loaded = telly.load_run(run)
    code = [example.code for example in loaded.task.read_split(email_corpus, "test")[:12]]
    with torch.no_grad():
        expected = loaded.task.embed(loaded.model, code, loaded.config.max_code_len, "test code")
    vectors = SentenceTransformer(str(out), device="cpu").encode(code, convert_to_tensor=True)
    assert torch.allclose(vectors, expected, atol=1e-5)
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_lasttoken"]
