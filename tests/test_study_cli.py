"""`telly probe`, `telly compare`, `telly recommend` and `--freeze auto` end to end on a tiny random BERT."""

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr
from transformers import BertModel

from telly.cli import main
from telly.study.compare import shared_code
from telly.study.properties import PROPERTIES
from telly.study.recommend import choose_k
from telly.study.representations import control_model, pretrained_model, weights_fingerprint

from conftest import TINY_LAYERS

EMAIL = Path(sysconfig.get_paths()["stdlib"]) / "email"
TRAINING = ["--batch-size", "16", "--lr", "1e-3", "--max-code-len", "64", "--max-nl-len", "32",
            "--max-eval-examples", "40", "--seed", "1"]


@pytest.fixture(scope="module")
def k1_run(tiny_bert_dir, email_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "k1"
    argv = ["finetune", "--task", "code-search", "--model", str(tiny_bert_dir), "--data", str(email_corpus),
            "--out", str(out), "--freeze", "1", *TRAINING]
    assert main(argv) == 0
    return out


def probe(tiny_bert_dir, out, cache, *extra):
    argv = ["probe", "--model", str(tiny_bert_dir), "--functions", "40", "--sources", str(EMAIL), "--max-length", "96",
            "--out", str(out), "--cache-dir", str(cache), "--weight-seeds", "1", *extra]
    assert main(argv) == 0
    return json.loads((out / "probe.json").read_text())


def test_probe_reports_every_layer_and_the_layer_weights(tiny_bert_dir, tmp_path):
    report = probe(tiny_bert_dir, tmp_path / "probe", tmp_path / "cache")
    assert set(report["properties"]) == set(PROPERTIES) - {"semantic"}  # all that runs without POJ-104
    for result in report["properties"].values():
        assert len(result["layers"]) == len(result["weights"]) == len(result["layer_intervals"]) == TINY_LAYERS + 1
        assert sum(result["weights"]) == pytest.approx(1.0)
        assert all(0 <= low <= score <= high <= 1 for score, (low, high) in zip(result["layers"], result["layer_intervals"]))
    assert report["functions"] == {"train": 32, "test": 8}
    assert report["properties"]["lexical"]["metric"] == "accuracy"
    assert report["properties"]["invariance"]["metric"] == "map@r"
    assert report["properties"]["syntactic"]["metric"] == "mrr"
    assert report["lexical_subword"] == "last" and "read on its last sub-word" in report["protocol"]["lexical"]
    markdown = (tmp_path / "probe" / "probe.md").read_text()
    assert markdown.count("\n| 4 |") == 2  # the score table and the weight table both reach layer 4
    assert "- lexical: type of each code token" in markdown and "read on its last sub-word" in markdown
    low, high = report["properties"]["structural"]["layer_intervals"][2]
    assert f"{report['properties']['structural']['layers'][2]:.4f} [{low:.4f}, {high:.4f}]" in markdown
    assert (tmp_path / "probe" / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_lexical_probe_reads_the_sub_word_asked_for(tiny_bert_dir, tmp_path):
    first = probe(tiny_bert_dir, tmp_path / "first", tmp_path / "cache", "--property", "lexical", "--lexical-subword", "first")
    last = probe(tiny_bert_dir, tmp_path / "last", tmp_path / "cache", "--property", "lexical")
    assert first["lexical_subword"] == "first" and "read on its first sub-word" in first["protocol"]["lexical"]
    # Other positions, so other features and scores (the same number of sampled tokens).
    assert first["properties"]["lexical"]["layers"] != last["properties"]["lexical"]["layers"]
    assert first["properties"]["lexical"]["test_items"] == last["properties"]["lexical"]["test_items"]


def test_probe_is_deterministic_and_reads_its_cache(tiny_bert_dir, tmp_path, monkeypatch):
    first = probe(tiny_bert_dir, tmp_path / "first", tmp_path / "cache", "--property", "structural")
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("the representations should come from the cache")

    monkeypatch.setattr("telly.study.probe.layer_features", must_not_run)
    again = probe(tiny_bert_dir, tmp_path / "again", tmp_path / "cache", "--property", "structural")
    assert again["properties"] == first["properties"]


def test_control_has_the_architecture_but_not_the_weights(tiny_bert_dir):
    pretrained = pretrained_model(str(tiny_bert_dir)).encoder
    control = control_model(str(tiny_bert_dir), seed=5).encoder
    assert {n: p.shape for n, p in control.state_dict().items()} == {n: p.shape for n, p in pretrained.state_dict().items()}
    assert weights_fingerprint(control) != weights_fingerprint(pretrained)
    assert weights_fingerprint(control) == weights_fingerprint(control_model(str(tiny_bert_dir), seed=5).encoder)


def test_probe_of_a_run_uses_its_fine_tuned_weights(tiny_bert_dir, k1_run, tmp_path):
    report = probe(tiny_bert_dir, tmp_path / "tuned", tmp_path / "cache", "--run", str(k1_run), "--property", "lexical")
    assert report["representations"] == "fine-tuned (k1)"
    pretrained = probe(tiny_bert_dir, tmp_path / "pre", tmp_path / "cache", "--property", "lexical")
    frozen_layers = slice(0, 2)  # K=1 left the embeddings and block 1 as they were
    assert report["properties"]["lexical"]["layers"][frozen_layers] == pretrained["properties"]["lexical"]["layers"][frozen_layers]
    # The trained blocks changed the features: the weighted probe learns other layer weights.
    assert report["properties"]["lexical"]["weights"] != pretrained["properties"]["lexical"]["weights"]


def independent_pooled_layers(model: BertModel, tokenizer, texts: list[str]) -> list[np.ndarray]:
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        states = model(**encoded, output_hidden_states=True).hidden_states
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    return [((layer * mask).sum(1) / mask.sum(1)).numpy() for layer in states]


def independent_rsa_of_layer(k1_run, tiny_bert_dir, tokenizer, texts: list[str], layer: int) -> float:
    tuned = BertModel.from_pretrained(tiny_bert_dir)
    tuned.load_state_dict({k.removeprefix("encoder."): v for k, v in load_file(k1_run / "best" / "model.safetensors").items()})
    before = independent_pooled_layers(BertModel.from_pretrained(tiny_bert_dir).eval(), tokenizer, texts)[layer]
    after = independent_pooled_layers(tuned.eval(), tokenizer, texts)[layer]

    def cosines(x):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        return (unit @ unit.T)[np.triu_indices(len(x), 1)]

    return spearmanr(cosines(before), cosines(after)).statistic


def test_compare_finds_frozen_layers_unchanged_and_matches_an_independent_rsa(k1_run, tiny_bert_dir, email_corpus, tokenizer):
    argv = ["compare", "--run", str(k1_run), "--inputs", "30", "--input-set", "task", "--no-feature-cache"]
    assert main(argv) == 0
    [report] = json.loads((k1_run / "compare" / "compare.json").read_text())["comparisons"]
    assert report["input_set"] == "task"
    assert [row["layer"] for row in report["layers"]] == list(range(TINY_LAYERS + 1))
    for row in report["layers"][:2]:  # embeddings and block 1 were frozen
        assert row["rsa"] == pytest.approx(1.0) and row["cka"] == pytest.approx(1.0)
        assert row["rsa_interval"] == pytest.approx([1.0, 1.0]) and row["cka_interval"] == pytest.approx([1.0, 1.0])
    assert report["layers"][4]["rsa"] < 1 - 1e-4 and report["layers"][4]["cka"] < 1 - 1e-4  # trained blocks moved
    for row in report["layers"]:
        for measure in ("rsa", "cka"):
            low, high = row[f"{measure}_interval"]
            assert low - 1e-9 <= row[measure] <= high + 1e-9

    records = [json.loads(line) for line in (email_corpus / "test.jsonl").read_text().splitlines()[:30]]
    texts = [" ".join(r["code_tokens"]) for r in records]
    expected = independent_rsa_of_layer(k1_run, tiny_bert_dir, tokenizer, texts, 4)
    assert report["layers"][4]["rsa"] == pytest.approx(expected, abs=1e-5)
    markdown = (k1_run / "compare" / "compare.md").read_text()
    assert (k1_run / "compare" / "compare.png").is_file() and "| 4 |" in markdown
    assert "inputs: the first 30 test examples of the run's task" in markdown


def test_shared_code_is_documented_functions_of_the_training_files(email_corpus):
    code = shared_code([EMAIL], "python", inputs=25, seed=0)
    train = {" ".join(json.loads(line)["code_tokens"]) for line in (email_corpus / "train.jsonl").read_text().splitlines()}
    assert len(code.texts) == len(set(code.texts)) == 25 and set(code.texts) <= train  # data build splits alike
    assert shared_code([EMAIL], "python", inputs=25, seed=0) == code
    assert shared_code([EMAIL], "python", inputs=25, seed=1).texts != code.texts  # another shuffle


def test_compare_reads_one_shared_set_of_code_by_default(k1_run, tiny_bert_dir, tokenizer, tmp_path):
    argv = ["compare", "--run", str(k1_run), "--inputs", "30", "--sources", str(EMAIL), "--out", str(tmp_path),
            "--no-feature-cache"]
    assert main(argv) == 0
    [report] = json.loads((tmp_path / "compare.json").read_text())["comparisons"]
    assert report["input_set"] == "code" and report["inputs"] == 30
    assert "python functions of the training files of" in report["input_description"]
    texts = shared_code([EMAIL], "python", inputs=30, seed=0).texts
    expected = independent_rsa_of_layer(k1_run, tiny_bert_dir, tokenizer, texts, 4)
    assert report["layers"][4]["rsa"] == pytest.approx(expected, abs=1e-5)


def test_compare_puts_several_runs_in_one_table(k1_run, tmp_path):
    argv = ["compare", "--run", str(k1_run), str(k1_run), "--inputs", "10", "--sources", str(EMAIL), "--out", str(tmp_path)]
    assert main(argv) == 0
    first, second = json.loads((tmp_path / "compare.json").read_text())["comparisons"]
    assert first == second and first["inputs"] == 10
    markdown = (tmp_path / "compare.md").read_text()
    assert markdown.count("| layer | code-search (k1) | code-search (k1) |") == 2  # RSA and CKA tables


def test_compare_refuses_a_model_the_run_did_not_start_from(k1_run, tmp_path, capsys):
    argv = ["compare", "--run", str(k1_run), "--model", "default", "--sources", str(EMAIL), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "not 'default'" in capsys.readouterr().err


def recommend_argv(tiny_bert_dir, email_corpus, out, command="recommend", *extra):
    training = TRAINING[2:] if command == "recommend" else TRAINING  # recommend's brief run is one epoch
    return [command, "--task", "code-search", "--model", str(tiny_bert_dir), "--data", str(email_corpus),
            "--out", str(out), "--auto-freeze-examples", "32", "--auto-freeze-inputs", "20", *training, *extra]


def test_recommend_returns_the_largest_k_whose_layers_stay_similar(tiny_bert_dir, email_corpus, tmp_path):
    assert main(recommend_argv(tiny_bert_dir, email_corpus, tmp_path / "rec")) == 0
    recommendation = json.loads((tmp_path / "rec" / "recommendation.json").read_text())
    assert len(recommendation["similarities"]) == TINY_LAYERS + 1
    assert recommendation["k"] == choose_k(recommendation["similarities"], 0.9)
    assert recommendation["train_examples"] == 32 and recommendation["inputs"] == 20
    brief = json.loads((tmp_path / "rec" / "brief-run" / "metrics.json").read_text())
    assert brief["freeze"] == -1 and brief["examples"]["train"] == 32


@pytest.mark.parametrize("threshold, k", [("-1", TINY_LAYERS - 1), ("1.0", -1)])
def test_freeze_auto_trains_with_the_recommended_k(tiny_bert_dir, email_corpus, tmp_path, threshold, k, capsys):
    out = tmp_path / "auto"
    argv = recommend_argv(tiny_bert_dir, email_corpus, out, "finetune", "--freeze", "auto", "--auto-freeze-threshold", threshold)
    assert main(argv) == 0
    # The brief run's log lines and the run's, each printed once.
    assert [line.split(" / ")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("data: ")] == \
        ["data: 32 train", f"data: {len((email_corpus / 'train.jsonl').read_text().splitlines())} train"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["freeze"] == metrics["freeze_auto"]["k"] == k
    assert metrics["freeze_auto"]["reason"]
    model = BertModel.from_pretrained(tiny_bert_dir)
    frozen_prefixes = ("embeddings.",) + tuple(f"encoder.layer.{i}." for i in range(k)) if k >= 0 else ()
    frozen = sum(p.numel() for n, p in model.named_parameters() if n.startswith(frozen_prefixes))
    assert metrics["params"]["trainable"] == sum(p.numel() for p in model.parameters()) - frozen
    # The study reads the run with the K it chose.
    assert main(["compare", "--run", str(out), "--inputs", "5", "--no-feature-cache"]) == 0
