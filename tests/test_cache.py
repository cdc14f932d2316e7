"""The frozen-prefix activation cache is exact: cached and uncached training give the same losses,
and evaluations the same scores, whether the states stay in memory or are spilled to disk; spilled
states are reused only while valid."""

import contextlib
import copy
import json
import logging
import math
import sysconfig
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import BertConfig, BertModel

from telly import FinetuneConfig, freeze
from telly.config import CacheOptions
from telly.errors import UserError
from telly.models import state_store
from telly.models.cache import FillCounts, FrozenPrefixCache
from telly.models.layers import find_backbone
from telly.tasks.search import CodeSearchTask, SearchExample

HIDDEN = 32
EMAIL = Path(sysconfig.get_paths()["stdlib"]) / "email"


def examples(email_corpus):
    records = [json.loads(line) for line in (email_corpus / "train.jsonl").read_text().splitlines()]
    return [SearchExample(" ".join(r["docstring_tokens"]), " ".join(r["code_tokens"])) for r in records[:40]]


def train_losses(task, model, batches, cache=None):
    torch.manual_seed(0)  # the same dropout draws in the top blocks, cached or not
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


def loss_batches(task, model, data, size=5) -> list:
    """The task's loss on `data`, `size` examples a call: what a cache records from."""
    return [partial(task.loss, model, task.collate(data[i : i + size])) for i in range(0, len(data), size)]


def tiny_config(tokenizer) -> BertConfig:
    """Dropout as the real model has it (0.1): frozen layers run in eval mode, cached or not."""
    return BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=4, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1)


def tiny_encoder(tokenizer) -> BertModel:
    torch.manual_seed(0)
    return BertModel(tiny_config(tokenizer))


def search_task(tokenizer, max_code_len=64) -> CodeSearchTask:
    task = CodeSearchTask(FinetuneConfig(task="code-search", data="-", out="-", max_code_len=max_code_len, max_nl_len=32))
    task.tokenizer = tokenizer
    return task


def frozen_model(task, encoder, k):
    model = task.build_model(copy.deepcopy(encoder))
    freeze(model, k)
    return model


@pytest.mark.parametrize("k", [0, 2, 3])
def test_cached_training_gives_the_uncached_losses_step_by_step(k, tokenizer, email_corpus):
    encoder = tiny_encoder(tokenizer)
    task = search_task(tokenizer)
    data = examples(email_corpus)
    batches = [task.collate(data[i : i + 8]) for i in range(0, len(data), 8)]

    plain = task.build_model(copy.deepcopy(encoder))
    freeze(plain, k)
    expected = train_losses(task, plain, batches * 2)

    cached = task.build_model(copy.deepcopy(encoder))
    freeze(cached, k)
    cache = FrozenPrefixCache(cached, k)
    # Filled from differently composed batches: padding and order must not matter.
    cache.fill(cached, loss_batches(task, cached, data))
    assert len(cache) == len({e.query for e in data} | {e.code for e in data})
    assert train_losses(task, cached, batches * 2, cache) == pytest.approx(expected, abs=1e-5)
    # The swaps are undone: the model is whole again.
    assert all(type(block).__name__ == "BertLayer" for block in cached.encoder.encoder.layer)


def test_encoder_side_of_summarization_is_cached_exactly(tokenizer, email_corpus):
    """The new decoder embeds its targets with the encoder's embedding module; only encoder calls replay."""
    from telly.tasks.summarize import CodeSummarizationTask

    encoder = tiny_encoder(tokenizer)
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
    cache = FrozenPrefixCache(cached, k)
    cache.fill(cached, [partial(task.loss, cached, batch) for batch in batches])
    assert len(cache) == len({e.source for e in data})  # sources only: targets never went in
    assert train_losses(task, cached, batches * 2, cache) == pytest.approx(expected, abs=1e-5)


def tiny_t5(tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=3,
                      num_decoder_layers=2, pad_token_id=0, decoder_start_token_id=0,
                      eos_token_id=tokenizer.sep_token_id, dropout_rate=0.0)
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config)


def summarization_task(tokenizer, **settings):
    from telly.tasks.summarize import CodeSummarizationTask

    settings = {"max_code_len": 64, "max_nl_len": 16, **settings}
    task = CodeSummarizationTask(FinetuneConfig(task="code-summarization", data="-", out="-", **settings))
    task.tokenizer = tokenizer
    return task


@pytest.mark.parametrize("k", [0, 2])
def test_t5_encoder_is_cached_exactly(k, tokenizer, email_corpus):
    """T5: the first block's relative position bias reaches the top blocks, the decoder (which shares
    the embedding matrix) embeds its own inputs, and T5's dropout after the embeddings stays. Without
    dropout: T5's stack applies one dropout module to the embeddings and to its output, so at K > 0
    the cache (which replays block 0's input as computed in eval mode) skips the first use of it."""
    pretrained, task = tiny_t5(tokenizer), summarization_task(tokenizer)
    data = task.read_split(email_corpus, "train")[:24]

    plain = frozen_model(task, pretrained, k)
    batches = [task.collate(data[i : i + 8]) for i in range(0, len(data), 8)]
    expected = train_losses(task, plain, batches * 2)
    cached = frozen_model(task, pretrained, k)
    cache = FrozenPrefixCache(cached, k)
    cache.fill(cached, loss_batches(task, cached, data))
    assert len(cache) == len({e.source for e in data})
    assert train_losses(task, cached, batches * 2, cache) == pytest.approx(expected, abs=1e-5)
    assert all(type(block).__name__ == "T5Block" for block in pretrained.encoder.block)


# Spilling to disk and reusing what was spilled.


def fill(cache, task, model, data, size=5) -> FillCounts:
    return cache.fill(model, loss_batches(task, model, data, size))


def sequences(tokenizer, data, max_code_len=64) -> set[tuple[int, ...]]:
    """The distinct token sequences the encoder reads, by tokenizing each text on its own (no padding)."""
    def ids(text, max_length):
        return tuple(tokenizer(text, truncation=True, max_length=max_length)["input_ids"])

    return {ids(e.query, 32) for e in data} | {ids(e.code, max_code_len) for e in data}


def shards(folder):
    """The shard files under a spill folder (each K's in its own `k<K>/`)."""
    return sorted(folder.rglob("*.safetensors"))


def shard_shapes(path) -> list[list[int]]:
    with safe_open(path, framework="pt") as shard:
        return [shard.get_slice(name).get_shape() for name in shard.keys()]


def spilled_cache(task, model, k, folder, data) -> FrozenPrefixCache:
    """A filled cache whose every state is in shard files."""
    cache = FrozenPrefixCache(model, k, spill_folder=folder, memory_limit=0)
    fill(cache, task, model, data)
    return cache


def count_forwards(*blocks) -> list[int]:
    """A list that grows by one at every forward call of any of `blocks`."""
    calls = []
    for block in blocks:
        block.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_states_beyond_the_memory_limit_are_spilled_and_replayed_exactly(tokenizer, email_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(state_store, "SHARD_BYTES", 20_000)
    encoder, task, data, k = tiny_encoder(tokenizer), search_task(tokenizer), examples(email_corpus), 2
    batches = [task.collate(data[i : i + 8]) for i in range(0, len(data), 8)]
    expected = train_losses(task, frozen_model(task, encoder, k), batches * 2)

    wanted = sequences(tokenizer, data)
    state_bytes = sum(len(ids) for ids in wanted) * HIDDEN * 4  # float32
    limit = state_bytes // 3
    model = frozen_model(task, encoder, k)
    cache = FrozenPrefixCache(model, k, spill_folder=tmp_path / "spill", memory_limit=limit)
    assert fill(cache, task, model, data) == FillCounts(reused=0, computed=len(wanted))
    assert len(cache) == len(wanted)
    assert 0 < cache.store.memory_bytes <= limit
    spilled = [shape for path in shards(tmp_path / "spill") for shape in shard_shapes(path)]
    assert len(shards(tmp_path / "spill")) > 1
    assert sum(math.prod(shape) for shape in spilled) * 4 == state_bytes - cache.store.memory_bytes
    assert all(shape[1] == HIDDEN for shape in spilled)
    assert train_losses(task, model, batches * 2, cache) == pytest.approx(expected, abs=1e-5)


def test_a_second_cache_on_the_spill_folder_computes_nothing_and_replays_the_same_losses(tokenizer, email_corpus, tmp_path):
    encoder, task, data, k = tiny_encoder(tokenizer), search_task(tokenizer), examples(email_corpus), 2
    batches = [task.collate(data[i : i + 8]) for i in range(0, len(data), 8)]
    expected = train_losses(task, frozen_model(task, encoder, k), batches)
    spilled_cache(task, frozen_model(task, encoder, k), k, tmp_path, data)
    written = shards(tmp_path)

    model = frozen_model(task, encoder, k)
    block_forwards = count_forwards(model.encoder.encoder.layer[0])
    cache = FrozenPrefixCache(model, k, spill_folder=tmp_path, memory_limit=0)
    assert fill(cache, task, model, data) == FillCounts(reused=len(sequences(tokenizer, data)), computed=0)
    assert block_forwards == []
    assert shards(tmp_path) == written
    assert train_losses(task, model, batches, cache) == pytest.approx(expected, abs=1e-5)


def test_another_k_recomputes_every_sequence_and_deletes_the_old_shards(tokenizer, email_corpus, tmp_path):
    encoder, task, data = tiny_encoder(tokenizer), search_task(tokenizer), examples(email_corpus)
    spilled_cache(task, frozen_model(task, encoder, 2), 2, tmp_path, data)
    old = shards(tmp_path)
    model = frozen_model(task, encoder, 1)
    cache = FrozenPrefixCache(model, 1, spill_folder=tmp_path, memory_limit=0)
    assert len(cache) == 0 and not any(path.exists() for path in old)
    assert fill(cache, task, model, data) == FillCounts(reused=0, computed=len(sequences(tokenizer, data)))
    assert len(shards(tmp_path)) == 1  # the new K's states


def test_another_frozen_weight_recomputes_every_sequence(tokenizer, email_corpus, tmp_path):
    encoder, task, data, k = tiny_encoder(tokenizer), search_task(tokenizer), examples(email_corpus), 2
    spilled_cache(task, frozen_model(task, encoder, k), k, tmp_path, data)
    old = shards(tmp_path)
    changed = copy.deepcopy(encoder)
    with torch.no_grad():
        changed.embeddings.word_embeddings.weight[tokenizer.cls_token_id, 0] += 1e-3
    model = frozen_model(task, changed, k)
    cache = FrozenPrefixCache(model, k, spill_folder=tmp_path, memory_limit=0)
    assert fill(cache, task, model, data) == FillCounts(reused=0, computed=len(sequences(tokenizer, data)))
    assert not any(path.exists() for path in old)


def test_new_examples_compute_only_their_sequences(tokenizer, email_corpus, tmp_path):
    encoder, task, data, k = tiny_encoder(tokenizer), search_task(tokenizer), examples(email_corpus), 2
    spilled_cache(task, frozen_model(task, encoder, k), k, tmp_path, data[:30])
    before, after = sequences(tokenizer, data[:30]), sequences(tokenizer, data)
    model = frozen_model(task, encoder, k)
    cache = FrozenPrefixCache(model, k, spill_folder=tmp_path, memory_limit=0)
    counts = fill(cache, task, model, data)
    assert counts == FillCounts(reused=len(before), computed=len(after - before))
    assert counts.computed >= 10  # the new examples' code at least


def test_another_max_length_computes_only_the_sequences_it_truncates(tokenizer, email_corpus, tmp_path):
    """The queries of every batch are stored, its code is not: the code must still be computed."""
    encoder, data, k = tiny_encoder(tokenizer), examples(email_corpus), 2
    task = search_task(tokenizer, max_code_len=64)
    spilled_cache(task, frozen_model(task, encoder, k), k, tmp_path, data)
    shorter = search_task(tokenizer, max_code_len=24)
    before, after = sequences(tokenizer, data, 64), sequences(tokenizer, data, 24)
    model = frozen_model(shorter, encoder, k)
    cache = FrozenPrefixCache(model, k, spill_folder=tmp_path, memory_limit=0)
    counts = fill(cache, shorter, model, data)
    assert counts == FillCounts(reused=len(after & before), computed=len(after - before))
    assert 0 < counts.computed < len(after)


def test_a_damaged_shard_is_computed_again_not_a_crash(tokenizer, email_corpus, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(state_store, "SHARD_BYTES", 20_000)
    encoder, task, data, k = tiny_encoder(tokenizer), search_task(tokenizer), examples(email_corpus), 2
    spilled_cache(task, frozen_model(task, encoder, k), k, tmp_path, data)
    damaged = shards(tmp_path)[0]
    lost = len(shard_shapes(damaged))
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a torn file
    model = frozen_model(task, encoder, k)
    with caplog.at_level(logging.WARNING, logger="telly"):
        cache = FrozenPrefixCache(model, k, spill_folder=tmp_path, memory_limit=0)
    assert f"{damaged} is damaged" in caplog.text and not damaged.exists()
    everything = len(sequences(tokenizer, data))
    assert fill(cache, task, model, data) == FillCounts(reused=everything - lost, computed=lost)


# Growing the cache (--freeze progressive): the newly frozen blocks run once over the stored states.


@pytest.mark.parametrize("spill", [False, True])
def test_a_grown_cache_runs_only_the_newly_frozen_blocks_and_replays_the_uncached_losses(spill, tokenizer, email_corpus,
                                                                                         tmp_path):
    """Cached at K=1, trained two steps (blocks 1-3 change), frozen to K=3: growing runs blocks 1
    and 2 once per encoder call over the stored states, and block 0 and block 3 not at all; then
    training replays exactly what a model frozen at K=3 without a cache computes."""
    encoder, task, data = tiny_encoder(tokenizer), search_task(tokenizer), examples(email_corpus)
    batches = [task.collate(data[i : i + 8]) for i in range(0, len(data), 8)]
    folder = tmp_path / "spill" if spill else None
    model = frozen_model(task, encoder, 1)
    cache = FrozenPrefixCache(model, 1, spill_folder=folder, memory_limit=0 if spill else None)
    fill(cache, task, model, data)
    train_losses(task, model, batches[:2], cache)
    freeze(model, 3)
    expected = train_losses(task, copy.deepcopy(model), batches * 2)

    layers = model.encoder.encoder.layer
    below, newly_frozen, above = count_forwards(layers[0]), count_forwards(layers[1], layers[2]), count_forwards(layers[3])
    calls = 2 * math.ceil(len(data) / 5)  # queries and code: two encoder calls per batch of 5
    everything = len(sequences(tokenizer, data))
    assert grow(cache, task, model, 3, data) == FillCounts(reused=0, computed=everything)
    assert (len(below), len(newly_frozen), len(above)) == (0, 2 * calls, 0)
    assert cache.k == 3 and len(cache) == everything
    assert train_losses(task, model, batches * 2, cache) == pytest.approx(expected, abs=1e-5)
    assert all(type(block).__name__ == "BertLayer" for block in layers)
    if spill:  # K=1's shards are gone; a resumed run at K=3 finds every grown state valid
        assert {path.parent.name for path in shards(folder)} == {"k3"}
        resumed = FrozenPrefixCache(model, 3, spill_folder=folder, memory_limit=0)
        assert fill(resumed, task, model, data) == FillCounts(reused=everything, computed=0)


@pytest.mark.parametrize("memory_limit", [None, 0, 10**9], ids=["in memory", "spilled", "spill folder, in memory"])
def test_a_growing_cache_drops_each_old_state_once_its_new_one_is_stored(memory_limit, tokenizer, email_corpus, tmp_path,
                                                                         monkeypatch):
    """While the cache grows from K=1 to K=3 it never holds more states than sequences (old and new
    together; keeping every old state until the end would hold up to twice as many), and the old
    states are dropped from the tiers' accounting. Sequences met again after their old state is gone
    (the first 7 examples, a second time) are not computed again, and every grown state is what a
    cache filled at K=3 stores."""
    encoder, task, data = tiny_encoder(tokenizer), search_task(tokenizer), examples(email_corpus)
    model = frozen_model(task, encoder, 1)
    cache = FrozenPrefixCache(model, 1, spill_folder=None if memory_limit is None else tmp_path, memory_limit=memory_limit)
    fill(cache, task, model, data)
    freeze(model, 3)
    old_store, everything = cache.store, len(sequences(tokenizer, data))
    assert len(old_store) == everything and (old_store.memory_bytes > 0) == (memory_limit != 0)

    stores, store_for = [], cache._store_for
    monkeypatch.setattr(cache, "_store_for", lambda k: stores.append(store_for(k)) or stores[-1])
    held = []  # old + new states, before each encoder call's new states are stored
    model.encoder.encoder.layer[2].register_forward_hook(lambda *_: held.append(len(old_store) + len(stores[0])))
    assert grow(cache, task, model, 3, data + data[:7]) == FillCounts(reused=0, computed=everything)
    assert len(held) == 2 * math.ceil((len(data) + 7) / 5) and max(held) == everything
    assert len(old_store) == 0 and old_store.memory_bytes == 0

    filled_at_3 = FrozenPrefixCache(model, 3)
    fill(filled_at_3, task, model, data)
    assert len(cache) == everything
    for key in sequences(tokenizer, data):
        torch.testing.assert_close(cache.store.get(key), filled_at_3.store.get(key), atol=1e-5, rtol=1e-5)


def grow(cache, task, model, k, data, size=5) -> FillCounts:
    return cache.grow(model, k, loss_batches(task, model, data, size))


def test_the_memory_limit_must_be_positive():
    with pytest.raises(UserError, match="--cache-memory-mb must be > 0"):
        CacheOptions(memory_mb=0)


# Every family of the layout table: MPNet's tuples, GPT-2 and the Llama family (decoders, last-token
# pooling, rotary positions), line completion; keys that do not depend on the padding side or pad id.


def tiny_decoder_config(family: str, vocab_size: int):
    """A 4-layer, 32-wide random config of a decoder family, dropout on (0.1) wherever it is the
    blocks' own. StarCoder2's embedding dropout is applied with the whole model's training flag, not
    the frozen embeddings', so uncached Telly-K would drop out what the cache stored: it stays 0 here."""
    from transformers import GemmaConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Starcoder2Config

    shared = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, attention_dropout=0.1)
    return {
        "gpt2": lambda: GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=4, n_head=2, n_positions=128,
                                   resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1),
        "llama": lambda: LlamaConfig(**shared),
        "qwen2": lambda: Qwen2Config(**shared),
        "mistral": lambda: MistralConfig(**shared),
        "starcoder2": lambda: Starcoder2Config(**shared, residual_dropout=0.1, embedding_dropout=0.0),
        "gemma": lambda: GemmaConfig(**shared, head_dim=8),
    }[family]()


DECODER_FAMILIES = ["gpt2", "llama", "qwen2", "mistral", "starcoder2", "gemma"]


def left_padding(tokenizer):
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    return left


def assert_cached_training_is_exact(task, fill_task, pretrained, k, data, batch_size=8):
    """Fill the cache through `fill_task` (other batches, maybe other padding), train through `task`
    with and without it: the same losses step by step."""
    plain = frozen_model(task, pretrained, k)  # also tells a task its special tokens
    batches = [task.collate(data[i : i + batch_size]) for i in range(0, len(data), batch_size)]
    expected = train_losses(task, plain, batches * 2)
    model = frozen_model(task, pretrained, k)
    cache = FrozenPrefixCache(model, k)
    cache.fill(model, loss_batches(fill_task, model, data))
    assert train_losses(task, model, batches * 2, cache) == pytest.approx(expected, abs=1e-5)
    return cache


@pytest.mark.parametrize("k", [0, 2])
def test_mpnet_whose_blocks_return_tuples_is_cached_exactly(k, tokenizer, email_corpus):
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    mpnet = MPNetModel(MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=4,
                                   num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                                   hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    task = search_task(tokenizer)
    data = examples(email_corpus)
    cache = assert_cached_training_is_exact(task, task, mpnet, k, data)
    assert len(cache) == len(sequences(tokenizer, data))
    assert all(type(block).__name__ == "MPNetLayer" for block in mpnet.encoder.layer)


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_decoder_families_are_cached_exactly_whatever_the_padding_side(family, byte_level_tokenizer, email_corpus):
    """Code search on a decoder (last-token pooling): the cache filled from left-padded batches
    serves right-padded training batches, and the pad id is a real token of the vocabulary."""
    from transformers import AutoModel

    torch.manual_seed(0)
    decoder = AutoModel.from_config(tiny_decoder_config(family, len(byte_level_tokenizer)))
    task, left = search_task(byte_level_tokenizer), search_task(left_padding(byte_level_tokenizer))
    assert task.pooling(decoder) == "last"
    data = examples(email_corpus)[:24]
    cache = assert_cached_training_is_exact(task, left, decoder, 2, data)
    assert len(cache) == len(sequences(byte_level_tokenizer, data))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_line_completion_on_a_decoder_is_cached_exactly(family, byte_level_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from telly.data import BUILDERS
    from telly.tasks.complete import CodeCompletionTask

    BUILDERS["code-completion"]([EMAIL], tmp_path, seed=0)
    torch.manual_seed(0)
    pretrained = AutoModelForCausalLM.from_config(tiny_decoder_config(family, len(byte_level_tokenizer)))
    task = CodeCompletionTask(FinetuneConfig(task="code-completion", data="-", out="-", max_code_len=48, max_nl_len=16))
    task.tokenizer = byte_level_tokenizer
    data = task.read_split(tmp_path, "train")[:24]
    for k in (0, 3):
        assert_cached_training_is_exact(task, task, pretrained, k, data)


def test_filling_and_growing_run_the_lm_head_for_the_first_batch_only(byte_level_tokenizer, tmp_path):
    """What a decoder computes above the recorded block (its LM head over the whole vocabulary, the
    loss) is thrown away: after the first batch, which counts the encoder calls of one, every batch
    stops at its last, yet every sequence is stored and replayed exactly."""
    from transformers import AutoModelForCausalLM

    from telly.data import BUILDERS
    from telly.tasks.complete import CodeCompletionTask

    BUILDERS["code-completion"]([EMAIL], tmp_path, seed=0)
    torch.manual_seed(0)
    pretrained = AutoModelForCausalLM.from_config(tiny_decoder_config("llama", len(byte_level_tokenizer)))
    task = CodeCompletionTask(FinetuneConfig(task="code-completion", data="-", out="-", max_code_len=48, max_nl_len=16))
    task.tokenizer = byte_level_tokenizer
    data = task.read_split(tmp_path, "train")[:24]
    model = frozen_model(task, pretrained, 1)
    head_calls = count_forwards(model.model.lm_head)
    cache = FrozenPrefixCache(model, 1)
    everything = len({tuple(row) for row in task.collate(data)["input_ids"].tolist()})  # right-padded: distinct rows
    assert cache.fill(model, loss_batches(task, model, data)) == FillCounts(reused=0, computed=everything)
    assert len(head_calls) == 1

    freeze(model, 3)
    batches = [task.collate(data[i : i + 8]) for i in range(0, len(data), 8)]
    expected = train_losses(task, copy.deepcopy(model), batches)
    head_calls.clear()
    assert cache.grow(model, 3, loss_batches(task, model, data)) == FillCounts(reused=0, computed=everything)
    assert len(head_calls) == 1
    assert train_losses(task, model, batches, cache) == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_the_real_smollm2_is_cached_exactly_at_half_its_depth(tmp_path):
    """SmolLM2-135M (GGUF, tied embeddings and LM head, rotary positions) at K=15 of 30, line
    completion on real code: the cached losses are the uncached ones, step by step."""
    from telly.data import BUILDERS
    from telly.tasks.complete import CodeCompletionTask

    BUILDERS["code-completion"]([EMAIL], tmp_path, seed=0)
    task = CodeCompletionTask(FinetuneConfig(task="code-completion", model="smollm2", data="-", out="-",
                                             max_code_len=96, max_nl_len=16))
    pretrained = task.load_pretrained()
    assert pretrained.config.tie_word_embeddings and find_backbone(pretrained).num_layers == 30
    assert_cached_training_is_exact(task, task, pretrained, 15, task.read_split(tmp_path, "train")[:16])


# Evaluation from the cache: valid and test inputs go through the frozen prefix once per run.


def evaluation_scores(task, model, data, cache=None) -> dict:
    model.eval()
    with torch.no_grad(), cache.evaluating() if cache is not None else contextlib.nullcontext():
        return task.evaluate(model, data, "evaluation")


def change_the_top_blocks(model, k) -> None:
    """What training does between two evaluations, as far as the cache can tell."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in find_backbone(model).blocks[k:].parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))


def assert_evaluation_from_the_cache_is_exact(task, pretrained, k, data, spill_folder=None) -> FrozenPrefixCache:
    """Two evaluations through the cache, the top blocks changed in between: each gives the uncached
    evaluation's scores; the first runs the frozen blocks as often as an uncached evaluation, the
    second never. With `spill_folder` every state goes to disk. Returns the cache."""
    model = frozen_model(task, pretrained, k)
    frozen_block_calls = count_forwards(*find_backbone(model).blocks[:k])
    cache = FrozenPrefixCache(model, k, spill_folder, memory_limit=None if spill_folder is None else 0)

    uncached = evaluation_scores(task, model, data)
    calls_per_evaluation = len(frozen_block_calls)
    assert evaluation_scores(task, model, data, cache) == uncached
    assert len(frozen_block_calls) == 2 * calls_per_evaluation > 0

    change_the_top_blocks(model, k)
    changed = evaluation_scores(task, model, data)
    frozen_block_calls.clear()
    assert evaluation_scores(task, model, data, cache) == changed
    assert frozen_block_calls == []
    assert changed != uncached  # the replayed states reached blocks that compute something else now
    return cache


@pytest.mark.parametrize("k", [1, 3])
def test_code_search_evaluates_from_the_cache_exactly(k, tokenizer, email_corpus):
    task = search_task(tokenizer)
    data = task.read_split(email_corpus, "test")[:40]
    assert task.evaluates_from_prefix_cache
    cache = assert_evaluation_from_the_cache_is_exact(task, tiny_encoder(tokenizer), k, data)
    assert len(cache) == len(sequences(tokenizer, data))


def test_evaluation_states_beyond_the_memory_limit_are_spilled_and_replayed_exactly(tokenizer, email_corpus, tmp_path):
    task = search_task(tokenizer)
    data = task.read_split(email_corpus, "test")[:40]
    cache = assert_evaluation_from_the_cache_is_exact(task, tiny_encoder(tokenizer), 2, data, spill_folder=tmp_path)
    assert cache.store.memory_bytes == 0
    assert sum(len(shard_shapes(path)) for path in shards(tmp_path)) == len(sequences(tokenizer, data))


def test_clone_detection_evaluates_from_the_cache_exactly(tokenizer, tmp_path):
    from telly.data import BUILDERS
    from telly.tasks.clone import CloneDetectionTask

    BUILDERS["clone-detection"]([EMAIL], tmp_path, seed=0)
    task = CloneDetectionTask(FinetuneConfig(task="clone-detection", data="-", out="-", max_code_len=64))
    task.tokenizer = tokenizer
    torch.manual_seed(0)  # the same new head in every model built from the encoder
    assert_evaluation_from_the_cache_is_exact(task, tiny_encoder(tokenizer), 2, task.read_split(tmp_path, "test")[:40])


def test_summarization_with_a_new_decoder_evaluates_its_encoder_from_the_cache_exactly(tokenizer, email_corpus):
    task = summarization_task(tokenizer, max_nl_len=12, decoder_layers=2, beam_size=2)
    torch.manual_seed(1)  # the same new decoder in every model built from the encoder
    data = task.read_split(email_corpus, "test")[:16]
    assert_evaluation_from_the_cache_is_exact(task, tiny_encoder(tokenizer), 2, data)
    assert task.evaluates_from_prefix_cache


def test_t5_summarization_evaluates_its_encoder_from_the_cache_exactly(tokenizer, email_corpus):
    """`generate` calls T5's encoder once per batch; its decoder, a stack of its own, runs in full."""
    task = summarization_task(tokenizer, max_nl_len=12, beam_size=2)
    assert_evaluation_from_the_cache_is_exact(task, tiny_t5(tokenizer), 2, task.read_split(email_corpus, "test")[:16])
    assert task.evaluates_from_prefix_cache


def test_a_decoder_only_model_generates_without_the_cache(byte_level_tokenizer):
    """Its frozen blocks run at every new token (on their keys and values of the prompt), so its
    evaluation is not served from the cache."""
    from transformers import AutoModelForCausalLM

    from telly.tasks.complete import CodeCompletionTask

    pretrained = AutoModelForCausalLM.from_config(tiny_decoder_config("gpt2", len(byte_level_tokenizer)))
    summarization = summarization_task(byte_level_tokenizer)
    summarization.build_model(pretrained)
    completion = CodeCompletionTask(FinetuneConfig(task="code-completion", data="-", out="-"))
    assert not summarization.evaluates_from_prefix_cache and not completion.evaluates_from_prefix_cache
