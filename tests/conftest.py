"""Shared fixtures: tiny random-config models that use the real default tokenizer."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from telly.models.load import default_model_dir

TINY_LAYERS = 4


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests on the real default model")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="uses the real model; run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_dir())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer):
    """A 4-layer, 32-wide random BERT saved as a local model folder with the real WordPiece tokenizer."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=TINY_LAYERS,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def email_corpus(tmp_path_factory):
    """A small real code-search corpus: the standard library's `email` package (~230 functions)."""
    from telly.data.corpus import build_code_search

    folder = tmp_path_factory.mktemp("email-corpus")
    build_code_search([Path(sysconfig.get_paths()["stdlib"]) / "email"], folder, seed=0)
    return folder


@pytest.fixture(scope="session")
def byte_level_tokenizer():
    """A GPT-2-style byte-level BPE that can write newlines, trained here on real stdlib code."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    sources = sorted((Path(sysconfig.get_paths()["stdlib"]) / "json").glob("*.py"))
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([path.read_text() for path in sources], vocab_size=600,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    end = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=end, eos_token=end, pad_token=end)
