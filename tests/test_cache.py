"""The frozen-prefix activation cache is exact: cached and uncached training give the same losses."""

import copy
import json

import pytest
import torch
from transformers import BertConfig, BertModel

from telly import FinetuneConfig, freeze
from telly.models.cache import FrozenPrefixCache
from telly.tasks.search import CodeSearchTask, SearchExample


def examples(email_corpus):
    records = [json.loads(line) for line in (email_corpus / "train.jsonl").read_text().splitlines()]
    return [SearchExample(" ".join(r["docstring_tokens"]), " ".join(r["code_tokens"])) for r in records[:40]]


def train_losses(task, model, batches, cache=None):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for batch in batches:
        if cache is None:
            loss = task.loss(model, batch)
        else:
            with cache.replaying():
                loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("k", [0, 2, 3])
def test_cached_training_gives_the_uncached_losses_step_by_step(k, tokenizer, email_corpus):
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    task = CodeSearchTask(FinetuneConfig(task="code-search", data="-", out="-", max_code_len=64, max_nl_len=32))
    task.tokenizer = tokenizer
    data = examples(email_corpus)
    batches = [task.collate(data[i : i + 8]) for i in range(0, len(data), 8)]

    plain = task.build_model(copy.deepcopy(encoder))
    freeze(plain, k)
    expected = train_losses(task, plain, batches * 2)

    cached = task.build_model(copy.deepcopy(encoder))
    freeze(cached, k)
    cache = FrozenPrefixCache(cached, k, tokenizer.pad_token_id)
    # Filled from differently composed batches: padding and order must not matter.
    cache.fill(cached, lambda: [task.loss(cached, task.collate(data[i : i + 5])) for i in range(0, len(data), 5)])
    assert len(cache) == len({e.query for e in data} | {e.code for e in data})
    assert train_losses(task, cached, batches * 2, cache) == pytest.approx(expected, abs=1e-5)
    # The swaps are undone: the model is whole again.
    assert all(type(block).__name__ == "BertLayer" for block in cached.encoder.encoder.layer)


def test_encoder_side_of_summarization_is_cached_exactly(tokenizer, email_corpus):
    """The new decoder embeds its targets with the encoder's embedding module; only encoder calls replay."""
    from telly.tasks.summarize import CodeSummarizationTask

    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    encoder = BertModel(config)
    task = CodeSummarizationTask(FinetuneConfig(task="code-summarization", data="-", out="-", max_code_len=64,
                                                max_nl_len=16, decoder_layers=2))
    task.tokenizer = tokenizer
    data = task.read_split(email_corpus, "train")[:24]
    k = 2

    def build():
        torch.manual_seed(1)  # the same new decoder for both
        model = task.build_model(copy.deepcopy(encoder))
        freeze(model, k)
        return model

    plain = build()  # also tells the task its start and end tokens
    batches = [task.collate(data[i : i + 8]) for i in range(0, len(data), 8)]
    expected = train_losses(task, plain, batches * 2)
    cached = build()
    cache = FrozenPrefixCache(cached, k, tokenizer.pad_token_id)
    cache.fill(cached, lambda: [task.loss(cached, batch) for batch in batches])
    assert len(cache) == len({e.source for e in data})  # sources only: targets never went in
    assert train_losses(task, cached, batches * 2, cache) == pytest.approx(expected, abs=1e-5)
