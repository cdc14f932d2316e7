"""Every user mistake ends in one line on stderr and exit code 2 — never a traceback."""

import json
import re
import shutil

import pytest
from huggingface_hub import constants

from telly.cli import main


@pytest.fixture
def data(email_corpus, tmp_path):
    """A private copy of the small real corpus that a test may break."""
    copy = tmp_path / "data"
    shutil.copytree(email_corpus, copy)
    return copy


def finetune_args(model, data, out, *extra):
    return ["finetune", "--task", "code-search", "--model", str(model), "--data", str(data), "--out", str(out),
            "--batch-size", "8", "--max-train-examples", "8", "--max-eval-examples", "8", *extra]


def break_line(path, line_number, text):
    lines = path.read_text().splitlines()
    lines[line_number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def drop_field(path, line_number, field):
    lines = path.read_text().splitlines()
    record = json.loads(lines[line_number - 1])
    del record[field]
    lines[line_number - 1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


CASES = {
    "missing data folder": (lambda m, d, o: finetune_args(m, d / "nope", o), r"no such directory: .*nope"),
    "malformed JSONL line": (
        lambda m, d, o: (break_line(d / "valid.jsonl", 3, '{"code": '), finetune_args(m, d, o))[1],
        r"valid\.jsonl line 3: not valid JSON",
    ),
    "empty split": (
        lambda m, d, o: ((d / "test.jsonl").write_text(""), finetune_args(m, d, o))[1],
        r"empty split: test",
    ),
    "record missing a field": (
        lambda m, d, o: (drop_field(d / "train.jsonl", 5, "code_tokens"), finetune_args(m, d, o))[1],
        r'train\.jsonl line 5: missing field "code_tokens"',
    ),
    "K out of range": (lambda m, d, o: finetune_args(m, d, o, "--freeze", "4"), r"K=4 is out of range .* up to 3"),
    "unknown task": (
        lambda m, d, o: [a if a != "code-search" else "code-sarch" for a in finetune_args(m, d, o)],
        r"unknown task 'code-sarch'; choose one of: code-search",
    ),
    "model neither a folder nor reachable": (
        lambda m, d, o: finetune_args("someone/no-such-model", d, o),
        r"not a local folder and the Hugging Face hub is unreachable",
    ),
    "missing local model folder": (lambda m, d, o: finetune_args(d / "no-model", d, o), r"no such model folder"),
    "zero batch size": (lambda m, d, o: finetune_args(m, d, o) + ["--batch-size", "0"], r"--batch-size must be > 0"),
    "negative epochs": (lambda m, d, o: finetune_args(m, d, o, "--epochs", "-1"), r"--epochs must be > 0"),
    "zero learning rate": (lambda m, d, o: finetune_args(m, d, o, "--lr", "0"), r"--lr must be > 0"),
    "not a number": (lambda m, d, o: finetune_args(m, d, o, "--freeze", "three"), r"invalid int value: 'three'"),
    "missing required option": (lambda m, d, o: ["finetune", "--task", "code-search"], r"required: --data, --out"),
    "run folder not empty": (
        lambda m, d, o: (o.mkdir(), (o / "metrics.json").write_text("{}"), finetune_args(m, d, o))[2],
        r"run folder .* is not empty; pass --overwrite",
    ),
    "run folder is a file": (
        lambda m, d, o: (o.write_text("x"), finetune_args(m, d, o))[1], r"exists and is not a folder",
    ),
    "data build from a missing source": (
        lambda m, d, o: ["data", "build", str(d / "nowhere"), "--out", str(o)], r"no such file or directory: .*nowhere",
    ),
    "data build into a file": (
        lambda m, d, o: ["data", "build", str(d), "--out", str(d / "train.jsonl")], r"output path is a file",
    ),
    "report on a folder that is not a run": (lambda m, d, o: ["report", str(d)], r"is not a finished run"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_mistake_is_one_line_and_exit_code_2(case, tiny_bert_dir, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    make_argv, expected = CASES[case]
    argv = make_argv(tiny_bert_dir, data, tmp_path / "run")
    capsys.readouterr()
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    error_lines = [line for line in stderr.splitlines() if line.startswith("telly: error:")]
    assert len(error_lines) == 1, stderr
    assert "Traceback" not in stderr
    assert re.search(expected, error_lines[0]), error_lines[0]
