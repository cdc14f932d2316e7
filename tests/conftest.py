"""Shared fixtures: tiny random-config models that use the real default tokenizer."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from telly.checkpoints import CHECKPOINTS
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


class Terminal(io.StringIO):
    """Stands in for stderr on a terminal, where progress bars draw (tqdm hides them elsewhere)."""

    def isatty(self) -> bool:
        return True


def on_a_terminal(monkeypatch) -> Terminal:
    """What is printed to stderr from now on, as if it were a terminal. Called in the test itself:
    pytest puts its own stderr back between a fixture and the test."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    return screen


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


_VERBS = ("sum", "count", "scale", "clamp", "shift", "mix", "pick", "merge", "trim", "fold")
_NOUNS = ("price", "weight", "score", "length", "offset", "budget", "margin")


def _java_method(file: int, index: int) -> str:
    verb, noun = _VERBS[(file + index) % len(_VERBS)], _NOUNS[file % len(_NOUNS)]
    bodies = (
        f"int total = {file};\n        for (int value : values) {{\n            total += value * {index + 1};\n        }}\n        return total;",
        f"if (values.length > {index}) {{\n            return values[{index}] - {file};\n        }} else {{\n            return {file} + offset;\n        }}",
        f"int i = 0;\n        int best = {file};\n        while (i < values.length && best < {100 + index}) {{\n            best = Math.max(best, values[i++]);\n        }}\n        return best;",
        f"try {{\n            return Integer.parseInt(\"{file}{index}\") + values.length;\n        }} catch (NumberFormatException error) {{\n            return -{index};\n        }}",
    )
    return (f"    /**\n     * Returns the {verb} of the {noun} values for case {file} and {index}. More text.\n     */\n"
            f"    public int {verb}{file}x{index}(int[] values) {{\n        {bodies[(file + index) % 4]}\n    }}\n")


def _ruby_method(file: int, index: int) -> str:
    verb, noun = _VERBS[(file + index) % len(_VERBS)], _NOUNS[file % len(_NOUNS)]
    bodies = (
        f"total = {file}\n    values.each {{ |value| total += value * {index + 1} }}\n    total",
        f"if values.size > {index}\n      values[{index}] - {file}\n    else\n      {file} + @offset\n    end",
        f"best = {file}\n    values.each do |value|\n      best = value if value > best && best < {100 + index}\n    end\n    best",
        f"Integer(\"{file}{index}\") + values.size\n  rescue ArgumentError => error\n    -{index}",
    )
    return (f"  # Returns the {verb} of the {noun} values for case {file} and {index}.\n"
            f"  def {verb}_{file}_{index}(values)\n    {bodies[(file + index) % 4]}\n  end\n")


@pytest.fixture(scope="session")
def java_sources(tmp_path_factory):
    """40 Java files of 4 documented methods each, written here (loops, branches, try/catch)."""
    folder = tmp_path_factory.mktemp("java-sources")
    for file in range(40):
        methods = "\n".join(_java_method(file, index) for index in range(4))
        (folder / f"Case{file}.java").write_text(f"package demo;\n\npublic class Case{file} {{\n    private int offset;\n\n{methods}}}\n")
    return folder


@pytest.fixture(scope="session")
def ruby_sources(tmp_path_factory):
    """40 Ruby files of 4 documented methods each, written here."""
    folder = tmp_path_factory.mktemp("ruby-sources")
    for file in range(40):
        methods = "\n".join(_ruby_method(file, index) for index in range(4))
        (folder / f"case{file}.rb").write_text(f"class Case{file}\n{methods}end\n")
    return folder


SECONDS_PER_STEP = 0.25  # a power of two: step counts give exact seconds


def use_step_clock(patch=setattr) -> None:
    """Count training time in steps, SECONDS_PER_STEP each, instead of reading the machine's clock:
    a time budget then means a number of steps, however fast or busy the machine is.

    `patch` is `monkeypatch.setattr` in a test, or plain `setattr` in a subprocess of one.
    """
    import telly.train as train

    steps = [0]
    train_step = train.train_step

    def counted_step(run, indices):
        steps[0] += 1
        return train_step(run, indices)

    patch(train, "train_step", counted_step)
    patch(train.TrainingClock, "source", staticmethod(lambda: steps[0] * SECONDS_PER_STEP))


@pytest.fixture
def step_clock(monkeypatch):
    use_step_clock(monkeypatch.setattr)


def start_and_kill(argv, out: Path, after_checkpoint: str, how=signal.SIGKILL, step_clock: bool = False) -> int:
    """Run telly in a subprocess and send it `how` as soon as the named checkpoint exists; with
    `step_clock`, its training time is counted in steps (`use_step_clock`)."""
    prelude = "import conftest; conftest.use_step_clock(); " if step_clock else ""
    command = [sys.executable, "-c", f"{prelude}import sys; from telly.cli import main; sys.exit(main(sys.argv[1:]))"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                                                 os.environ.get("PYTHONPATH", "")])}
    # SIGINT as in a terminal, also when the tests were started in the background (`command &`), which ignores it.
    process = subprocess.Popen([*command, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 1800  # a guard against a hang, far beyond any machine's speed
    while not (out / CHECKPOINTS / after_checkpoint).exists():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(how)
    return process.wait(timeout=120)
