"""--freeze progressive: blocks freeze during training once their gradients stop changing."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import telly.train as train_module
from telly.cli import main
from telly.models.progressive import block_gradient_norms, blocks_to_freeze


@pytest.mark.parametrize("k, previous, current, percentile, expected", [
    # Rates 0.05, 0.2, 0.1, 0.3: median 0.15; block 0 is below it, block 1 above: embeddings + block 0.
    (-1, [10, 10, 10, 10], [10.5, 12, 11, 13], 50, 1),
    # Rates 0.1, 0.2, 0.3, 0.4: median 0.25; blocks 0 and 1 freeze, block 2 is above.
    (-1, [10, 10, 10, 10], [11, 12, 13, 14], 50, 2),
    # Block 0 changes most (0.5): nothing freezes, not even the stable blocks above it.
    (-1, [10, 10, 10, 10], [15, 10, 10.1, 10.2], 50, -1),
    # The 100th percentile is the largest rate: all but the top block, which always trains.
    (-1, [10, 10, 10, 10], [11, 12, 13, 14], 100, 3),
    # Only the trainable blocks are ranked (rates 0.01 and 0.3 of blocks 2 and 3): block 2 joins.
    (2, [0, 0, 10, 10], [0, 0, 10.1, 13], 50, 3),
    # A drop counts as a change like a rise: rates 0.05, 0.3, 0.01 of blocks 1-3, median 0.05.
    (1, [0, 10, 10, 10], [0, 9.5, 13, 10.1], 50, 2),
    # A block without gradients before has no rate: stop there.
    (-1, [0, 10, 10, 10], [0, 10, 10, 10], 50, -1),
])
def test_the_bottom_blocks_whose_gradient_norm_changed_least_freeze(k, previous, current, percentile, expected):
    assert blocks_to_freeze(k, previous, current, percentile) == expected


def test_each_block_gradient_norm_is_the_norm_of_all_its_gradients():
    blocks = [nn.Linear(2, 1, bias=True), nn.Linear(2, 1), nn.Linear(2, 1)]
    blocks[0].weight.grad, blocks[0].bias.grad = torch.tensor([[3.0, 0.0]]), torch.tensor([4.0])
    blocks[1].weight.grad = torch.tensor([[1.0, 1.0]])  # its bias has no gradient
    assert block_gradient_norms(blocks) == pytest.approx([5.0, 2 ** 0.5, 0.0])


def progressive_argv(model, data, out, *extra):
    return ["finetune", "--task", "code-search", "--model", str(model), "--data", str(data), "--out", str(out),
            "--freeze", "progressive", "--epochs", "4", "--batch-size", "8", "--max-train-examples", "16",
            "--max-eval-examples", "8", "--max-code-len", "32", "--max-nl-len", "16", "--lr", "1e-3",
            "--progressive-every", "2", "--progressive-percentile", "100", *extra]


def test_a_progressive_run_freezes_during_training_and_the_frozen_weights_stop(tiny_bert_dir, email_corpus, tmp_path,
                                                                              monkeypatch):
    """2 steps an epoch, intervals of 2 steps, a percentile every block is under: the first interval
    (steps 1-2) only measures, the second (steps 3-4) freezes everything but the top block. The
    weights frozen at step 4 are those of the final model; the top block trained on."""
    at_freezing = {}
    real = train_module.freeze_blocks_that_stopped_changing

    def freezing(run, state):
        real(run, state)
        if state.freezing and not at_freezing:
            at_freezing.update({name: p.detach().clone() for name, p in run.model.named_parameters()})

    monkeypatch.setattr(train_module, "freeze_blocks_that_stopped_changing", freezing)
    real_evaluate, rising = train_module.evaluate, iter([0.1, 0.2, 0.3, 0.4])  # the last epoch is the best

    def evaluate(run, examples, description, valid_metrics=None):
        if description.startswith("valid at step"):
            return {"mrr": next(rising)}
        return real_evaluate(run, examples, description, valid_metrics)

    monkeypatch.setattr(train_module, "evaluate", evaluate)
    out = tmp_path / "progressive"
    assert main(progressive_argv(tiny_bert_dir, email_corpus, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["freeze"] == 3 and [(event["k"], event["step"]) for event in metrics["progressive"]] == [(3, 4)]
    final = load_file(out / "best" / "model.safetensors")
    frozen = [name for name in at_freezing if ".embeddings." in name or any(f".layer.{i}." in name for i in range(3))]
    top = [name for name in at_freezing if ".layer.3." in name]
    assert frozen and all(torch.equal(final[name], at_freezing[name]) for name in frozen)
    assert any(not torch.equal(final[name], at_freezing[name]) for name in top)
    # The parameter counts are the final K's: what trained at the end (no head in code search).
    total = sum(tensor.numel() for tensor in final.values())
    assert metrics["params"]["total"] == total
    assert metrics["params"]["trainable"] == total - sum(final[name].numel() for name in frozen)
    report = tmp_path / "report"
    assert main(["report", str(out), "--out", str(report)]) == 0
    assert "| progressive | progressive |" in (report / "report.md").read_text() and (report / "freezing.png").stat().st_size > 0
    assert '<img src="freezing.png"' in (report / "report.html").read_text()


def test_a_progressive_run_that_never_froze_is_still_reported_as_progressive(tiny_bert_dir, email_corpus, tmp_path,
                                                                            monkeypatch):
    """Its metrics are full fine-tuning's (K=-1, every parameter trained), but a sweep must not take
    it for the full fine-tuning run of its seed."""
    monkeypatch.setattr(train_module, "blocks_to_freeze", lambda k, previous, current, percentile: k)
    out = tmp_path / "never-froze"
    assert main(progressive_argv(tiny_bert_dir, email_corpus, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["freeze"] == -1 and metrics["progressive"] == []
    assert metrics["params"]["trainable"] == metrics["params"]["total"]
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "| never-froze | progressive |" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "freezing.png").is_file()  # a flat line at K=-1


def test_a_progressive_run_resumes_with_its_blocks_frozen_and_gives_the_same_metrics(tiny_bert_dir, email_corpus,
                                                                                    tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    assert main(progressive_argv(tiny_bert_dir, email_corpus, whole, "--checkpoint-every", "1")) == 0
    expected = json.loads((whole / "metrics.json").read_text())

    real_step, steps = train_module.train_step, [0]

    def interrupted_at_step_6(run, indices):
        steps[0] += 1
        if steps[0] == 6:
            raise KeyboardInterrupt
        return real_step(run, indices)

    out = tmp_path / "resumed"
    argv = progressive_argv(tiny_bert_dir, email_corpus, out, "--checkpoint-every", "1")
    monkeypatch.setattr(train_module, "train_step", interrupted_at_step_6)
    assert main(argv) == 130  # after step 5's checkpoint, K=3 since step 4
    monkeypatch.setattr(train_module, "train_step", real_step)
    assert main([*argv, "--resume"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["test"] == expected["test"] and resumed["progressive"][0]["step"] == expected["progressive"][0]["step"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in expected["history"]]


def test_a_progressive_run_with_the_cache_grows_it_and_gives_the_uncached_metrics(tiny_bert_dir, email_corpus, tmp_path,
                                                                                 monkeypatch):
    """Freezes scripted to K=1 at step 4 and K=3 at step 6: the first fills the activation cache,
    the second grows it from the stored states; the run gives what the same run without the cache
    gives (same freezing, losses, valid and test scores)."""
    monkeypatch.setattr(train_module, "blocks_to_freeze", lambda k, previous, current, percentile: {-1: 1, 1: 3}.get(k, k))
    runs = {}
    for name, extra in (("cached", []), ("uncached", ["--no-cache"])):
        assert main(progressive_argv(tiny_bert_dir, email_corpus, tmp_path / name, *extra)) == 0
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    cached, uncached = runs["cached"], runs["uncached"]
    assert [(e["k"], e["step"]) for e in cached["progressive"]] == [(1, 4), (3, 6)] == \
        [(e["k"], e["step"]) for e in uncached["progressive"]]
    assert cached["activation_cache"] and not uncached["activation_cache"]
    assert [h["train_loss"] for h in cached["history"]] == pytest.approx([h["train_loss"] for h in uncached["history"]],
                                                                          abs=1e-5)
    assert [h["valid"] for h in cached["history"]] == [pytest.approx(h["valid"], abs=1e-5) for h in uncached["history"]]
    assert cached["test"] == pytest.approx(uncached["test"], abs=1e-5)
    log = (tmp_path / "cached" / "log.txt").read_text()
    assert re.search(r"activation cache: (\d+) sequences computed, 0 stored already", log)
    grown = re.search(r"activation cache grown from K=1 to K=3: blocks 1-2 ran over (\d+) stored sequences", log)
    assert grown and int(grown[1]) == int(re.search(r"activation cache: (\d+) sequences computed", log)[1])
    assert not (tmp_path / "cached" / "activation-cache").exists()
