"""`telly finetune --task code-search` end to end on a tiny random BERT and real stdlib code."""

import json
import math
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

from telly import train as train_module
from telly.cli import main
from telly.models.layers import find_backbone
from telly.tasks.search import CodeSearchTask

from conftest import on_a_terminal

K = 1


def run_finetune(model_dir, data_dir, out, seed=3, extra=()):
    argv = [
        "finetune", "--task", "code-search", "--model", str(model_dir), "--data", str(data_dir),
        "--out", str(out), "--freeze", str(K), "--epochs", "2", "--batch-size", "16", "--lr", "1e-3",
        "--max-code-len", "64", "--max-nl-len", "32", "--seed", str(seed), *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def run(tiny_bert_dir, email_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "k1"
    return out, run_finetune(tiny_bert_dir, email_corpus, out)


def independent_mrr(model: BertModel, tokenizer, data_dir) -> float:
    """MRR computed without telly: mean-pooled, normalised embeddings; rank of the gold by argsort."""
    records = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]

    def embed(texts, max_length):
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**{k: encoded[k] for k in ("input_ids", "attention_mask")}).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return (pooled / pooled.norm(dim=-1, keepdim=True)).numpy()

    queries = embed([" ".join(r["docstring_tokens"]) for r in records], 32)
    code = embed([" ".join(r["code_tokens"]) for r in records], 64)
    scores = queries @ code.T
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = [int(np.where(order[i] == i)[0][0]) + 1 for i in range(len(records))]
    return float(np.mean(1.0 / np.array(ranks)))


def test_metrics_json_holds_what_the_issue_lists(run, email_corpus):
    out, metrics = run
    assert set(metrics["test"]) == set(metrics["zero_shot_test"]) == {"mrr", "r@1", "r@5", "r@10"}
    assert set(CodeSearchTask.metrics) == set(metrics["test"]) and metrics["selection_metric"] == "mrr"
    assert metrics["best_epoch"] in (1, 2) and len(metrics["epoch_seconds"]) == 2
    assert metrics["seconds_per_epoch"] == pytest.approx(np.mean(metrics["epoch_seconds"]))
    assert metrics["peak_rss_mb"] > 100
    assert metrics["activation_cache"] is True  # K=1 on a BERT encoder: cached by default
    test_lines = (email_corpus / "test.jsonl").read_text().splitlines()
    assert metrics["examples"]["test"] == len(test_lines)
    config = json.loads((out / "config.json").read_text())
    assert (config["task"], config["freeze"], config["seed"]) == ("code-search", K, 3)
    assert "test (best epoch" in (out / "log.txt").read_text()


def test_parameter_report_matches_an_independent_count(run, tiny_bert_dir):
    _, metrics = run
    model = BertModel.from_pretrained(tiny_bert_dir)
    frozen = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("embeddings.", "encoder.layer.0.")))
    total = sum(p.numel() for p in model.parameters())
    assert metrics["params"]["total"] == total
    assert metrics["params"]["trainable"] == total - frozen


def test_frozen_weights_are_unchanged_and_the_rest_trained(run, tiny_bert_dir):
    out, _ = run
    best = load_file(out / "best" / "model.safetensors")
    pretrained = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    assert torch.equal(best["encoder.embeddings.word_embeddings.weight"], pretrained["embeddings.word_embeddings.weight"])
    assert torch.equal(best["encoder.encoder.layer.0.attention.self.query.weight"], pretrained["encoder.layer.0.attention.self.query.weight"])
    assert not torch.equal(best["encoder.encoder.layer.3.attention.self.query.weight"], pretrained["encoder.layer.3.attention.self.query.weight"])


def test_test_and_zero_shot_mrr_match_an_independent_computation(run, tiny_bert_dir, email_corpus, tokenizer):
    out, metrics = run
    pretrained = BertModel.from_pretrained(tiny_bert_dir).eval()
    assert metrics["zero_shot_test"]["mrr"] == pytest.approx(independent_mrr(pretrained, tokenizer, email_corpus), abs=1e-6)

    finetuned = BertModel.from_pretrained(tiny_bert_dir)
    state = {name.removeprefix("encoder."): value for name, value in load_file(out / "best" / "model.safetensors").items()}
    finetuned.load_state_dict(state)
    assert metrics["test"]["mrr"] == pytest.approx(independent_mrr(finetuned.eval(), tokenizer, email_corpus), abs=1e-6)
    # Training moved the model: the fine-tuned ranking differs from the zero-shot one.
    assert metrics["test"]["mrr"] != metrics["zero_shot_test"]["mrr"]


@pytest.mark.parametrize("cached", [True, False])
def test_the_frozen_layers_run_every_step_only_without_the_cache(cached, tiny_bert_dir, email_corpus, tmp_path,
                                                                 monkeypatch):
    """Forward calls of the first frozen block while training (not filling the cache, not evaluating):
    none with the cache, two per step without it (queries, then code)."""
    calls = []
    build = train_module.build_task_model

    def build_and_count(task, config):
        model, pretrained = build(task, config)
        block = find_backbone(model).blocks[0]
        # Counted while the task model trains (the frozen block itself stays in eval mode).
        block.register_forward_hook(lambda module, args, output: calls.append(1) if model.training else None)
        return model, pretrained

    monkeypatch.setattr(train_module, "build_task_model", build_and_count)
    metrics = run_finetune(tiny_bert_dir, email_corpus, tmp_path / "run", extra=[] if cached else ["--no-cache"])
    assert metrics["activation_cache"] is cached
    assert len(calls) == (0 if cached else 2 * metrics["steps"])


def test_valid_and_test_inputs_go_through_the_frozen_layers_at_their_first_evaluation_only(
        tiny_bert_dir, email_corpus, tmp_path, monkeypatch):
    """Forward calls of the first frozen block during each evaluation (zero-shot test, valid after
    each of the 2 epochs, test): with the cache, none once an input has been evaluated; without it,
    two per batch (queries, then code) every time. The scores are the same."""
    block_calls, calls_per_evaluation = [], []
    build, evaluate = train_module.build_task_model, CodeSearchTask.evaluate

    def build_and_count(task, config):
        model, pretrained = build(task, config)
        find_backbone(model).blocks[0].register_forward_hook(lambda *_: block_calls.append(1))
        return model, pretrained

    def evaluate_and_count(task, *args, **kwargs):
        before = len(block_calls)
        scores = evaluate(task, *args, **kwargs)
        calls_per_evaluation.append(len(block_calls) - before)
        return scores

    monkeypatch.setattr(train_module, "build_task_model", build_and_count)
    monkeypatch.setattr(CodeSearchTask, "evaluate", evaluate_and_count)
    batch = ["--eval-batch-size", "8"]
    cached = run_finetune(tiny_bert_dir, email_corpus, tmp_path / "cached", extra=batch)
    cached_calls, calls_per_evaluation[:] = list(calls_per_evaluation), []
    plain = run_finetune(tiny_bert_dir, email_corpus, tmp_path / "plain", extra=[*batch, "--no-cache"])

    test_calls, valid_calls = (2 * math.ceil(cached["examples"][split] / 8) for split in ("test", "valid"))
    assert valid_calls > 2 and test_calls > 2
    assert cached_calls == [test_calls, valid_calls, 0, 0]
    assert calls_per_evaluation == [test_calls, valid_calls, valid_calls, test_calls]
    assert cached["zero_shot_test"] == plain["zero_shot_test"]
    # Trained with and without the cache, the weights agree to float rounding (test_cache.py).
    assert [h["valid"] for h in cached["history"]] == [pytest.approx(h["valid"], abs=1e-6) for h in plain["history"]]
    assert cached["test"] == pytest.approx(plain["test"], abs=1e-6)


def test_same_seed_gives_the_same_metrics_and_explicit_cpu_is_what_auto_chose(run, tiny_bert_dir, email_corpus, tmp_path):
    _, first = run
    again = run_finetune(tiny_bert_dir, email_corpus, tmp_path / "again", extra=["--device", "cpu"])
    assert again["test"] == first["test"]
    assert [h["train_loss"] for h in again["history"]] == [h["train_loss"] for h in first["history"]]
    assert (first["device"], again["device"], again["precision"]) == ("cpu", "cpu", "no")


def test_training_shows_its_progress_and_hides_transformers_loading_bar(tiny_bert_dir, email_corpus, tmp_path,
                                                                       monkeypatch):
    terminal = on_a_terminal(monkeypatch)
    assert main(["finetune", "--task", "code-search", "--model", str(tiny_bert_dir), "--data", str(email_corpus),
                 "--out", str(tmp_path / "run"), "--batch-size", "8", "--max-train-examples", "16",
                 "--max-eval-examples", "8"]) == 0
    screen = terminal.getvalue()
    # tqdm's bar over the epoch's steps, redrawn after each with its rate (s/step when slower than 1/s) and loss.
    assert re.search(r"epoch 1/1: +50%.* 1/2 \[.*(step/s|s/step), loss=\d+\.\d{4}\]", screen), screen
    assert "Loading weights" not in screen


def finetune_with_scripted_valid_scores(scores, model_dir, data_dir, out, monkeypatch, *options):
    """A 6-epoch run whose validations return `scores` in turn; its metrics.json, its best
    checkpoint and the trainable weights at each validation."""
    scripted, weights_at, real_evaluate = iter(scores), [], train_module.evaluate

    def evaluate(run, examples, description, valid_metrics=None):
        if not description.startswith("valid at step"):
            return real_evaluate(run, examples, description, valid_metrics)
        weights_at.append({name: p.detach().clone() for name, p in run.model.named_parameters() if p.requires_grad})
        return next(scripted)

    monkeypatch.setattr(train_module, "evaluate", evaluate)
    assert main(["finetune", "--task", "code-search", "--model", str(model_dir), "--data", str(data_dir),
                 "--out", str(out), "--epochs", "6", "--batch-size", "8", "--max-train-examples", "16",
                 "--max-eval-examples", "8", *options]) == 0
    return json.loads((out / "metrics.json").read_text()), load_file(out / "best" / "model.safetensors"), weights_at


@pytest.mark.parametrize("patience, evaluations", [(2, 4), (0, 6)])
def test_patience_stops_after_that_many_evaluations_without_a_better_valid_score(
        tiny_bert_dir, email_corpus, tmp_path, monkeypatch, patience, evaluations):
    """Scripted valid MRRs 0.3, 0.5, 0.4, 0.45, 0.9, 0.95: with --patience 2 the run stops after the
    4th evaluation (two in a row below epoch 2's 0.5) and tests epoch 2's weights; without, it
    trains all 6 epochs."""
    metrics, best, weights_at = finetune_with_scripted_valid_scores(
        [{"mrr": mrr} for mrr in [0.3, 0.5, 0.4, 0.45, 0.9, 0.95]], tiny_bert_dir, email_corpus, tmp_path / "run",
        monkeypatch, "--patience", str(patience))
    assert len(metrics["history"]) == len(weights_at) == evaluations
    assert metrics["steps"] == 2 * evaluations and metrics["stopped_early"] == (patience > 0)
    expected_best = 2 if patience else 6
    assert metrics["best_epoch"] == expected_best
    assert all(torch.equal(best[name], value) for name, value in weights_at[expected_best - 1].items())


@pytest.mark.parametrize("select_by, best, evaluations", [(None, 1, 3), ("mrr", 1, 3), ("r@1", 3, 5)])
def test_select_by_names_the_valid_metric_that_picks_the_best_and_that_patience_watches(
        select_by, best, evaluations, tiny_bert_dir, email_corpus, tmp_path, monkeypatch):
    """Scripted valid scores where MRR is best at the 1st evaluation and R@1 at the 3rd: with
    --patience 2 the run stops two evaluations after the best of the metric it selects by and
    tests that evaluation's weights."""
    metrics, tested, weights_at = finetune_with_scripted_valid_scores(
        [{"mrr": 0.5, "r@1": 0.1}, {"mrr": 0.4, "r@1": 0.2}, {"mrr": 0.3, "r@1": 0.3},
         {"mrr": 0.2, "r@1": 0.25}, {"mrr": 0.1, "r@1": 0.2}, {"mrr": 0.9, "r@1": 0.9}],
        tiny_bert_dir, email_corpus, tmp_path / "run", monkeypatch,
        "--patience", "2", *(["--select-by", select_by] if select_by else []))
    assert metrics["selection_metric"] == (select_by or "mrr")
    assert len(metrics["history"]) == evaluations and metrics["best_epoch"] == best and metrics["stopped_early"]
    assert all(torch.equal(tested[name], value) for name, value in weights_at[best - 1].items())
