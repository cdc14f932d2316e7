"""The real offline default model (all-MiniLM-L6-v2). Slow: run with `make test-slow`."""

import pytest

from telly import find_backbone, freeze, load_pretrained

pytestmark = pytest.mark.slow


def test_default_model_loads_and_freezes_like_the_paper_says():
    model, tokenizer = load_pretrained("default")
    assert find_backbone(model).num_layers == 6
    total = sum(p.numel() for p in model.parameters())
    assert total == 22_713_216  # all-MiniLM-L6-v2's published size, 22.7M
    report = freeze(model, 3)
    frozen = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("embeddings.", *(f"encoder.layer.{i}." for i in range(3)))))
    assert (report.total, report.trainable) == (total, total - frozen)


def test_default_model_finds_its_own_docstrings_zero_shot(email_corpus, tmp_path):
    """Zero-shot code search on real stdlib code is far better than chance (MRR of chance ≈ 0.16 for 24)."""
    from telly import FinetuneConfig, finetune

    metrics = finetune(FinetuneConfig(task="code-search", data=str(email_corpus), out=str(tmp_path / "run"),
                                      max_train_examples=32, seed=0))
    assert metrics.zero_shot_test["mrr"] > 0.5
