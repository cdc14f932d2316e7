"""`telly predict` on every task: the files CodeXGLUE's evaluators read, scored back to metrics.json's test metrics."""

import json
import sysconfig
from pathlib import Path

import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score
from transformers import GPT2Config, GPT2LMHeadModel

import telly
from telly.cli import main
from telly.data import BUILDERS
from telly.use.predict import PREDICTION_FILES, score_file

EMAIL = Path(sysconfig.get_paths()["stdlib"]) / "email"
TRAINING = ["--freeze", "1", "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--max-code-len", "48",
            "--max-nl-len", "12", "--beam-size", "2", "--decoder-layers", "1", "--max-train-examples", "24",
            "--max-eval-examples", "16", "--seed", "1"]


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory, byte_level_tokenizer):
    torch.manual_seed(0)
    end = byte_level_tokenizer.eos_token_id
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(byte_level_tokenizer), n_embd=32, n_layer=3, n_head=2, n_positions=128,
                               bos_token_id=end, eos_token_id=end)).save_pretrained(folder)
    byte_level_tokenizer.save_pretrained(folder)
    return folder


def finetune_and_predict(task, model, data, tmp_path):
    run = tmp_path / "run"
    assert main(["finetune", "--task", task, "--model", str(model), "--data", str(data), "--out", str(run), *TRAINING]) == 0
    out = tmp_path / "predictions.txt"
    assert main(["predict", str(run), "--out", str(out), "--split", "test"]) == 0
    return run, out, json.loads((run / "metrics.json").read_text())["test"]


def telly_metrics_of_the_file(run, out, split="test"):
    """telly's metrics of the file as written, against the split the run was tested on."""
    loaded = telly.load_run(run)
    data = Path(loaded.config.data)
    examples = loaded.task.read_split(data, split)[: loaded.config.max_eval_examples]
    return score_file(loaded.task, out, examples, PREDICTION_FILES[loaded.task.name].keys(data, split, len(examples)))


def test_code_search_writes_each_querys_ranked_candidates(tiny_bert_dir, email_corpus, tmp_path):
    run, out, expected = finetune_and_predict("code-search", tiny_bert_dir, email_corpus, tmp_path)
    urls = list(range(16))  # telly's data has no urls: a query and its code are named by their line number
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["url"] for p in predictions] == urls and all(sorted(p["answers"]) == sorted(urls) for p in predictions)
    # MRR as the AdvTest evaluator computes it: 1 / (place of the query's own code), from the file alone.
    ranks = [p["answers"].index(p["url"]) + 1 for p in predictions]
    assert sum(1 / rank for rank in ranks) / len(ranks) == pytest.approx(expected["mrr"], abs=1e-12)
    assert sum(rank <= 5 for rank in ranks) / len(ranks) == pytest.approx(expected["r@5"], abs=1e-12)
    assert telly_metrics_of_the_file(run, out) == expected
    answers = [json.loads(line) for line in (tmp_path / "predictions.txt.gold").read_text().splitlines()]
    assert answers == [{"url": index, "idx": index} for index in range(16)]  # the evaluator's answers file


def test_clone_detection_writes_labelled_pairs_at_the_valid_threshold(tiny_bert_dir, tmp_path):
    BUILDERS["clone-detection"]([EMAIL], tmp_path / "bcb", seed=0)
    run, out, expected = finetune_and_predict("clone-detection", tiny_bert_dir, tmp_path / "bcb", tmp_path)
    gold = [line.split("\t") for line in (tmp_path / "bcb" / "test.txt").read_text().splitlines()[:16]]
    written = [line.split("\t") for line in out.read_text().splitlines()]
    assert [row[:2] for row in written] == [row[:2] for row in gold] and {row[2] for row in written} <= {"0", "1"}
    labels, decided = [int(row[2]) for row in gold], [int(row[2]) for row in written]
    assert f1_score(labels, decided, zero_division=0) == pytest.approx(expected["f1"], abs=1e-12)
    assert precision_score(labels, decided, zero_division=0) == pytest.approx(expected["precision"], abs=1e-12)
    assert recall_score(labels, decided, zero_division=0) == pytest.approx(expected["recall"], abs=1e-12)
    assert telly_metrics_of_the_file(run, out) == {name: value for name, value in expected.items() if name != "threshold"}


@pytest.mark.parametrize("task", ["code-summarization", "code-generation"])
def test_summaries_and_generated_code_score_as_the_run_did(task, tiny_bert_dir, tmp_path):
    BUILDERS[task]([EMAIL], tmp_path / "data", seed=0)
    run, out, expected = finetune_and_predict(task, tiny_bert_dir, tmp_path / "data", tmp_path)
    lines = out.read_text().splitlines()
    assert len(lines) == 16
    if task == "code-summarization":  # code-to-text's `idx<TAB>summary`, and its gold file
        assert [line.split("\t")[0] for line in lines] == [str(index) for index in range(16)]
        records = [json.loads(line) for line in (tmp_path / "data" / "test.jsonl").read_text().splitlines()[:16]]
        gold = (tmp_path / "predictions.txt.gold").read_text().splitlines()
        assert [line.split("\t", 1)[1].split() for line in gold] == [
            record["docstring_tokens"][: record["docstring_tokens"].index(".") + 1] if "." in record["docstring_tokens"]
            else record["docstring_tokens"] for record in records]
    else:
        assert not (tmp_path / "predictions.txt.gold").exists()  # CONCODE's evaluator reads test.json
    assert telly_metrics_of_the_file(run, out) == expected


def test_completion_writes_a_line_per_example(tiny_gpt2_dir, tmp_path):
    BUILDERS["code-completion"]([EMAIL], tmp_path / "lines", seed=0)
    run, out, expected = finetune_and_predict("code-completion", tiny_gpt2_dir, tmp_path / "lines", tmp_path)
    assert out.read_text().count("\n") == 16
    assert telly_metrics_of_the_file(run, out) == expected


def test_official_search_records_are_named_by_url_and_idx(email_corpus, tmp_path):
    """AdvTest's records carry a url and an idx: queries are named by url, candidates by idx."""
    records = [json.loads(line) for line in (email_corpus / "test.jsonl").read_text().splitlines()[:3]]
    official = tmp_path / "advtest"
    official.mkdir()
    (official / "test.jsonl").write_text("".join(json.dumps({**record, "url": f"https://x/{n}", "idx": 100 + n}) + "\n"
                                                 for n, record in enumerate(records)))
    file = PREDICTION_FILES["code-search"]
    keys = file.keys(official, "test", 3)
    assert keys == [("https://x/0", 100), ("https://x/1", 101), ("https://x/2", 102)]
    lines = file.lines([[2, 0, 1], [1, 2, 0], [0, 1, 2]], keys)
    assert json.loads(lines[0]) == {"url": "https://x/0", "answers": [102, 100, 101]}
    assert file.parse(lines, keys) == [[2, 0, 1], [1, 2, 0], [0, 1, 2]]
