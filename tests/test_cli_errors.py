"""Every user mistake ends in one line on stderr and exit code 2 — never a traceback."""

import contextlib
import hashlib
import json
import re
import shutil

import sysconfig
from pathlib import Path

import pytest
from huggingface_hub import constants
from transformers import AutoTokenizer, BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from telly.cli import main
from telly.data import BUILDERS

EMAIL = Path(sysconfig.get_paths()["stdlib"]) / "email"


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


def edit_record(path, line_number, edit):
    lines = path.read_text().splitlines()
    record = json.loads(lines[line_number - 1])
    edit(record)
    lines[line_number - 1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


def drop_field(path, line_number, field):
    edit_record(path, line_number, lambda record: record.pop(field))


def set_field(path, line_number, field, value):
    edit_record(path, line_number, lambda record: record.update({field: value}))


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
    "not a number": (lambda m, d, o: finetune_args(m, d, o, "--freeze", "three"), r"--freeze: expected an integer K, 'auto' or 'progressive', got 'three'"),
    "missing required option": (lambda m, d, o: ["finetune", "--task", "code-search"], r"required: --data, --out"),
    "run folder not empty": (
        lambda m, d, o: (o.mkdir(), (o / "metrics.json").write_text("{}"), finetune_args(m, d, o))[2],
        r"run folder .* is not empty; pass --resume to continue it, --overwrite to replace it",
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
    "report on a folder that is not a run": (lambda m, d, o: ["report", str(d)], r"is neither a finished run nor a sweep"),
    "empty summarization target": (
        lambda m, d, o: (set_field(d / "test.jsonl", 2, "docstring_tokens", []),
                         task_args("code-summarization", m, d, o))[1],
        r'test\.jsonl line 2: field "docstring_tokens" is empty',
    ),
    "clone pair with an unknown idx": (
        lambda m, d, o: (build("clone-detection", d), (d / "bcb" / "valid.txt").write_text("0\t999999\t1\n"),
                         task_args("clone-detection", m, d / "bcb", o))[2],
        r"valid\.txt line 1: unknown idx 999999",
    ),
    "CONCODE line without nl": (
        lambda m, d, o: (build("code-generation", d), drop_field(d / "concode" / "train.jsonl", 4, "nl"),
                         task_args("code-generation", m, d / "concode", o))[2],
        r'train\.jsonl line 4: missing field "nl"',
    ),
    "empty completion target": (
        lambda m, d, o: (build("code-completion", d), set_field(d / "lines" / "test.jsonl", 1, "gt", "  "),
                         task_args("code-completion", m, d / "lines", o))[2],
        r'test\.jsonl line 1: field "gt" is empty',
    ),
    "completion with an encoder-decoder model": (
        lambda m, d, o: (build("code-completion", d),
                         task_args("code-completion", save_tiny_t5(d / "t5", m), d / "lines", o))[1],
        r"code-completion runs decoder-only .* not the encoder-decoder t5",
    ),
    "unknown selection metric": (
        lambda m, d, o: finetune_args(m, d, o, "--select-by", "bleu"),
        r"--select-by: code-search is scored by mrr, r@1, r@5, r@10; got 'bleu'",
    ),
    "unknown method": (lambda m, d, o: finetune_args(m, d, o, "--method", "adapters"), r"--method must be one of telly, lora"),
    "LoRA with --freeze": (
        lambda m, d, o: finetune_args(m, d, o, "--method", "lora", "--freeze", "2"),
        r"--freeze and --freeze-decoder belong to --method telly",
    ),
    "freeze decoder of a model without one": (
        lambda m, d, o: task_args("code-summarization", m, d, o) + ["--freeze-decoder"],
        r"--freeze-decoder: this bert-like model has no pre-trained decoder",
    ),
    "field of the wrong type": (
        lambda m, d, o: (set_field(d / "train.jsonl", 2, "code_tokens", 5), finetune_args(m, d, o))[1],
        r'train\.jsonl line 2: field "code_tokens" must be a list of strings',
    ),
    "NUL byte in a JSONL line": (
        lambda m, d, o: (break_line(d / "valid.jsonl", 2, '{"code": "a\x00b"}'), finetune_args(m, d, o))[1],
        r"valid\.jsonl line 2: not valid JSON",
    ),
    "JSONL that is not UTF-8": (
        lambda m, d, o: ((d / "test.jsonl").write_bytes(b'{"code": "caf\xe9"}\n'), finetune_args(m, d, o))[1],
        r"test\.jsonl line 1: not UTF-8 text",
    ),
    "report on a metrics.json holding NaN": (
        lambda m, d, o: (o.mkdir(), (o / "metrics.json").write_text('{"test": {"mrr": Infinity, "r@1": NaN}}'),
                         ["report", str(o)])[2],
        r"metrics\.json is not valid JSON: Infinity is not a JSON value",
    ),
    "report on a truncated metrics.json": (
        lambda m, d, o: (o.mkdir(), (o / "metrics.json").write_text('{"task": "code-se'), ["report", str(o)])[2],
        r"metrics\.json is not valid JSON",
    ),
    "run folder under a file": (lambda m, d, o: finetune_args(m, d, d / "train.jsonl" / "run"), r"cannot create run folder .*Not a directory"),
    "mismatched tokenizer and model": (
        lambda m, d, o: finetune_args(save_tiny_bert(d / "small-vocab", m, vocab_size=100), d, o),
        r"its tokenizer has 30,522 tokens but the model embeds only 100",
    ),
    "resume and overwrite together": (lambda m, d, o: finetune_args(m, d, o, "--resume", "--overwrite"), r"choose one"),
    "negative patience": (lambda m, d, o: finetune_args(m, d, o, "--patience", "-1"), r"--patience must be >= 0, got -1"),
    "negative checkpoint interval": (lambda m, d, o: finetune_args(m, d, o, "--checkpoint-every", "-5"), r"--checkpoint-every must be >= 0"),
    "resume a folder that is not a run": (
        lambda m, d, o: (o.mkdir(), (o / "notes.txt").write_text("x"), finetune_args(m, d, o, "--resume"))[2],
        r"holds files but no config\.json: not a telly run to resume",
    ),
    "probe with --run and --control": (
        lambda m, d, o: ["probe", "--run", str(d), "--control", "--out", str(o)], r"--run and --control exclude each other",
    ),
    "probe with too few functions": (
        lambda m, d, o: ["probe", "--model", str(m), "--functions", "3", "--sources", str(EMAIL), "--out", str(o)],
        r"--functions must be at least 10",
    ),
    "probe sources without Python code": (
        lambda m, d, o: ["probe", "--model", str(m), "--sources", str(d), "--out", str(o), "--no-feature-cache"],
        r"no functions .* found in",
    ),
    "probe results into a file": (
        lambda m, d, o: ["probe", "--model", str(m), "--out", str(d / "train.jsonl")], r"output path is a file, not a folder",
    ),
    "compare a folder that is not a run": (lambda m, d, o: ["compare", "--run", str(d)], r"is not a finished run \(no config\.json\)"),
    "compare a run on another task's data": (
        lambda m, d, o: (build("clone-detection", d), ["compare", "--run", str(finished_run(m, d)), "--input-set", "task",
                                                       "--data", str(d / "bcb")])[1],
        r"no test data in .*bcb: looked for test\.jsonl",
    ),
    "compare with --data on the shared code": (
        lambda m, d, o: ["compare", "--run", str(finished_run(m, d)), "--data", str(d)],
        r"--data names a run's data folder for --input-set task",
    ),
    "probe the semantic property without POJ-104": (
        lambda m, d, o: ["probe", "--model", str(m), "--property", "semantic", "--out", str(o)],
        r"the semantic probe reads POJ-104: pass --poj104 DIR",
    ),
    "compare on too few inputs": (
        lambda m, d, o: ["compare", "--run", str(finished_run(m, d)), "--inputs", "2"], r"--inputs must be at least 3",
    ),
    "compare several runs without --out": (
        lambda m, d, o: ["compare", "--run", str(d), str(d)], r"pass --out to compare several runs",
    ),
    "recommend with a threshold out of range": (
        lambda m, d, o: ["recommend", *finetune_args(m, d, o)[1:], "--auto-freeze-threshold", "2"],
        r"--auto-freeze-threshold must be in \[-1, 1\]",
    ),
    "unknown similarity measure": (
        lambda m, d, o: finetune_args(m, d, o, "--freeze", "auto", "--auto-freeze-measure", "euclid"),
        r"--auto-freeze-measure must be one of rsa, cka",
    ),
    "freeze auto with LoRA": (
        lambda m, d, o: finetune_args(m, d, o, "--freeze", "auto", "--method", "lora"), r"belong to --method telly",
    ),
    "a diverged run": (
        lambda m, d, o: finetune_args(m, d, o, "--lr", "1e30", "--max-train-examples", "16"),
        r"training diverged: the loss is nan at step 2 \(epoch 1\); start again with a lower --lr than 1e\+30",
    ),
    "JSONL line nested too deeply": (
        lambda m, d, o: (break_line(d / "train.jsonl", 2, "[" * 200_000 + "]" * 200_000), finetune_args(m, d, o))[1],
        r"train\.jsonl line 2: not valid JSON \(nested too deeply\)",
    ),
    "JSONL number too long to convert": (
        lambda m, d, o: (break_line(d / "test.jsonl", 4, '{"code": 1' + "0" * 5000 + "}"), finetune_args(m, d, o))[1],
        r"test\.jsonl line 4: not valid JSON \(an integer too long to convert\)",
    ),
    "sweep with K out of range": (
        lambda m, d, o: ["sweep", *finetune_args(m, d, o)[1:], "--ks", "99"], r"--ks: K=99 is out of range",
    ),
    "sweep with no K": (
        lambda m, d, o: ["sweep", *finetune_args(m, d, o)[1:], "--ks", ""], r"--ks must be 'all', 'none' or comma-separated integers",
    ),
    "compare an unfinished run": (
        lambda m, d, o: (o.mkdir(), (o / "config.json").write_text("{}"), ["compare", "--run", str(o)])[2],
        r"is not a finished run \(no metrics\.json\)",
    ),
    "time budget that is not a number": (
        lambda m, d, o: finetune_args(m, d, o, "--time-budget", "nan"), r"--time-budget must be a finite number, got nan",
    ),
    "endless time budget": (
        lambda m, d, o: finetune_args(m, d, o, "--time-budget", "inf"), r"--time-budget must be a finite number, got inf",
    ),
    "infinite learning rate": (lambda m, d, o: finetune_args(m, d, o, "--lr", "inf"), r"--lr must be a finite number"),
    "weight decay that is not a number": (
        lambda m, d, o: finetune_args(m, d, o, "--weight-decay", "nan"), r"--weight-decay must be a finite number",
    ),
    "seed NumPy cannot take": (
        lambda m, d, o: finetune_args(m, d, o, "--seed", str(2**32)), r"--seed must be in 0\.\.4294967295, got 4294967296",
    ),
    "negative probe seed": (
        lambda m, d, o: ["probe", "--model", str(m), "--seed", "-1", "--out", str(o)], r"--seed must be in 0\.\.",
    ),
    "integer too large for any library": (
        lambda m, d, o: finetune_args(m, d, o, "--epochs", "1" + "0" * 30), r"--epochs must be at most 4,294,967,295 in size",
    ),
    "probe length too large": (
        lambda m, d, o: ["probe", "--model", str(m), "--max-length", "1" + "0" * 20, "--out", str(o)],
        r"--max-length must be at most 4,294,967,295 in size",
    ),
    "code length too short for the special tokens": (
        lambda m, d, o: finetune_args(m, d, o, "--max-code-len", "1"), r"--max-code-len must be at least 4",
    ),
    "query length too short for the special tokens": (
        lambda m, d, o: finetune_args(m, d, o, "--max-nl-len", "3"), r"--max-nl-len must be at least 4",
    ),
    "model folder without tokenizer files": (
        lambda m, d, o: finetune_args(model_copy(m, d, keep=("config.json", "model.safetensors")), d, o),
        r"model '.*' has no tokenizer files \(vocab\.txt, tokenizer\.json, \.\.\.\): its tokenizer would know only its 5",
    ),
    "config with more layers than the weights": (
        lambda m, d, o: finetune_args(model_copy(m, d, config={"num_hidden_layers": 6}), d, o),
        r"its config\.json does not match its weights: no weights for encoder\.layer\.4, encoder\.layer\.5$",
    ),
    "config with fewer layers than the weights": (
        lambda m, d, o: finetune_args(model_copy(m, d, config={"num_hidden_layers": 2}), d, o),
        r"does not match its weights: weights the config has no place for: encoder\.layer\.2, encoder\.layer\.3$",
    ),
    "hidden size other than the weights'": (
        lambda m, d, o: finetune_args(model_copy(m, d, config={"hidden_size": 64}), d, o),
        r"does not match its weights: weights of another shape than the config's for embeddings\.LayerNorm, "
        r"embeddings\.position_embeddings, embeddings\.token_type_embeddings, embeddings\.word_embeddings and 4 more$",
    ),
    "truncated weights file": (
        lambda m, d, o: finetune_args(model_copy(m, d, weights=lambda w: w[: len(w) // 2]), d, o),
        r"its weights cannot be read \(Error while deserializing header: incomplete metadata",
    ),
    "empty weights file": (
        lambda m, d, o: finetune_args(model_copy(m, d, weights=lambda w: b""), d, o),
        r"its weights cannot be read \(Error while deserializing header: header too small\)",
    ),
    "garbage weights file": (
        lambda m, d, o: finetune_args(model_copy(m, d, weights=lambda w: bytes(range(256)) * 100), d, o),
        r"its weights cannot be read \(Error while deserializing header",
    ),
    "data build into a run folder": (
        lambda m, d, o: (o.mkdir(), (o / "metrics.json").write_text("{}"), ["data", "build", str(EMAIL), "--out", str(o)])[2],
        r"data folder .*run is not empty; pass --overwrite to replace it",
    ),
    "data build into another task's data": (
        lambda m, d, o: ["data", "build", str(EMAIL), "--task", "code-generation", "--out", str(d)],
        r"data folder .*data is not empty",
    ),
    "data build over its own source": (
        lambda m, d, o: ["data", "build", str(d), "--out", str(d), "--overwrite"], r"--out .*data holds the source",
    ),
    "data build with no size limit": (
        lambda m, d, o: ["data", "build", str(EMAIL), "--out", str(o / "a" / "b"), "--max-file-mb", "0"],
        r"--max-file-mb must be > 0",
    ),
    "data build with a size limit that is not a number": (
        lambda m, d, o: ["data", "build", str(EMAIL), "--out", str(o), "--max-file-mb", "nan"],
        r"--max-file-mb must be a finite number",
    ),
    "export a folder that is not a run": (lambda m, d, o: ["export", str(d), "--out", str(o)],
                                          r"is not a finished run \(no config\.json\)"),
    "export into a folder that is not empty": (
        lambda m, d, o: ["export", str(finished_run(m, d)), "--out", str(d)],
        r"export folder .*data is not empty; choose a new or empty --out",
    ),
    "export the adapters of a run without LoRA": (
        lambda m, d, o: ["export", str(finished_run(m, d)), "--out", str(o), "--adapter"],
        r"--adapter exports LoRA adapters; .*finished was trained with --method telly",
    ),
    "predict into a folder": (lambda m, d, o: ["predict", str(finished_run(m, d)), "--out", str(d)],
                              r"--out .*data is a folder; name the prediction file to write"),
    "predict a split the data lacks": (
        lambda m, d, o: removed(d / "valid.jsonl", ["predict", str(finished_run(m, d)), "--split", "valid",
                                                     "--out", str(o.parent / "valid.txt")]),
        r"no valid data in .*data",
    ),
    "search with an empty query": (lambda m, d, o: ["search", str(finished_run(m, d)), "  ", "--sources", str(EMAIL)],
                                   r"the query is empty; say in words what the function does"),
    "search for no matches": (
        lambda m, d, o: ["search", str(finished_run(m, d)), "parse a header", "--sources", str(EMAIL), "--top", "0"],
        r"--top must be at least 1, got 0",
    ),
    "complete a file without a line": (lambda m, d, o: ["complete", str(d), str(EMAIL / "utils.py")],
                                       r"expected FILE:LINE, got '.*utils\.py'"),
    "complete with a code-search run": (
        lambda m, d, o: ["complete", str(finished_run(m, d)), f"{EMAIL / 'utils.py'}:10"],
        r"telly complete needs a code-completion run; .*finished fine-tuned for code-search",
    ),
    "summarize a function the file lacks": (
        lambda m, d, o: ["summarize", str(finished_run(m, d)), f"{EMAIL / 'utils.py'}:no_such_function"],
        r"no function named 'no_such_function' in .*utils\.py \(its functions: .*formataddr",
    ),
    "data build with no worker process": (
        lambda m, d, o: ["data", "build", str(EMAIL), "--out", str(o), "--jobs", "0"], r"--jobs must be at least 1, got 0",
    ),
}

BUILT_FOLDERS = {"clone-detection": "bcb", "code-generation": "concode", "code-completion": "lines"}


def build(task, data):
    """The task's data from the real `email` package, next to the code-search copy."""
    BUILDERS[task]([EMAIL], data / BUILT_FOLDERS[task], seed=0)


def task_args(task, model, data, out):
    return [task if arg == "code-search" else arg for arg in finetune_args(model, data, out)]


def model_copy(model, data, keep=None, config=None, weights=None):
    """A copy of the tiny model folder with only the files in `keep`, its config.json changed by
    `config`, or its weights' bytes replaced by `weights(bytes)`."""
    copy = data / "model-copy"
    shutil.copytree(model, copy, ignore=lambda _, names: [n for n in names if keep and n not in keep])
    if config:
        (copy / "config.json").write_text(json.dumps({**json.loads((copy / "config.json").read_text()), **config}))
    if weights:
        (copy / "model.safetensors").write_bytes(weights((copy / "model.safetensors").read_bytes()))
    return copy


def save_tiny_bert(folder, tokenizer_source, vocab_size):
    BertModel(BertConfig(vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(folder)
    return folder


def removed(path, argv):
    """`argv`, once `path` (which making `argv` needed) is deleted."""
    path.unlink()
    return argv


def finished_run(model, data):
    """A real (tiny) finished code-search run on the test's data copy."""
    run = data / "finished"
    assert main(finetune_args(model, data, run)) == 0
    return run


def save_tiny_t5(folder, tokenizer_source):
    T5ForConditionalGeneration(T5Config(vocab_size=100, d_model=8, d_ff=16, d_kv=4, num_heads=2, num_layers=1)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_user_mistake_is_one_line_and_exit_code_2(case, tiny_bert_dir, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    make_argv, expected = CASES[case]
    argv = make_argv(tiny_bert_dir, data, tmp_path / "run")
    before = files_and_contents(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    error_lines = [line for line in stderr.splitlines() if line.startswith("telly: error:")]
    assert len(error_lines) == 1, stderr
    assert "Traceback" not in stderr
    assert re.search(expected, error_lines[0]), error_lines[0]
    assert files_and_contents(tmp_path) == before  # nothing created, changed, lost or half-written
    assert "Loading weights" not in stderr and "LOAD REPORT" not in stderr  # transformers' bar and report


def test_every_bad_input_case_is_in_the_table():
    reliability = Path(__file__).parent.parent / "docs" / "RELIABILITY.md"
    rows = re.findall(r"^\| ([^|*]+?) \| `", reliability.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert sorted(rows) == sorted(CASES)
    assert f"`tests/test_cli_errors.py::CASES`: {len(CASES)} bad" in reliability.read_text(encoding="utf-8")


def files_and_contents(folder):
    """Every file and folder under `folder` with a digest of its bytes (None for a folder)."""
    return {str(path.relative_to(folder)): None if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*"))}


def test_a_refused_run_leaves_nothing_behind_so_the_fixed_command_runs(tiny_bert_dir, data, tmp_path):
    out = tmp_path / "run"
    assert main(finetune_args(tiny_bert_dir, data, out, "--freeze", "9")) == 2
    assert not out.exists()
    assert main(finetune_args(tiny_bert_dir, data, out, "--freeze", "1")) == 0
    assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(5, "Input/output error", "somewhere"),
                                     RuntimeError("a bug")])
def test_whatever_ends_a_new_run_before_its_first_checkpoint_leaves_no_folder(failure, tiny_bert_dir, data, tmp_path,
                                                                              monkeypatch):
    import telly.train

    def fail(*_):
        raise failure

    out = tmp_path / "runs" / "new"
    monkeypatch.setattr(telly.train, "train_step", fail)
    with pytest.raises(RuntimeError) if isinstance(failure, RuntimeError) else contextlib.nullcontext():
        assert main(finetune_args(tiny_bert_dir, data, out)) == (130 if isinstance(failure, KeyboardInterrupt) else 2)
    assert not (tmp_path / "runs").exists()  # the parent made for it too


def test_the_shortest_sequence_lengths_allowed_train(tiny_bert_dir, data, tmp_path):
    out = tmp_path / "run"
    assert main(finetune_args(tiny_bert_dir, data, out, "--max-code-len", "4", "--max-nl-len", "4")) == 0
    assert json.loads((out / "metrics.json").read_text())["test"]["mrr"] > 0


def test_a_full_disk_while_writing_metrics_is_one_line_and_the_run_can_resume(tiny_bert_dir, data, tmp_path, capsys, monkeypatch):
    import errno

    import telly.files

    real_open = open

    def open_on_a_full_disk(path, *args, **kwargs):
        stream = real_open(path, *args, **kwargs)
        if "metrics.json" in str(path):
            def no_space(*_):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            stream.write = no_space
        return stream

    out = tmp_path / "run"
    monkeypatch.setattr(telly.files, "open", open_on_a_full_disk, raising=False)
    capsys.readouterr()
    assert main(finetune_args(tiny_bert_dir, data, out)) == 2
    stderr = capsys.readouterr().err
    [error_line] = [line for line in stderr.splitlines() if line.startswith("telly: error:")]
    assert error_line.startswith("telly: error: No space left on device: ") and "metrics.json" in error_line
    assert "Traceback" not in stderr
    assert not (out / "metrics.json").exists() and not list(out.glob(".metrics.json*"))  # nothing half-written

    monkeypatch.undo()  # space freed: the same command with --resume finishes from the last checkpoint
    assert main([*finetune_args(tiny_bert_dir, data, out), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["test"]["mrr"] > 0


def error_line_of(stderr):
    [line] = [line for line in stderr.splitlines() if line.startswith("telly: error:")]
    assert "Traceback" not in stderr
    return line


@pytest.mark.parametrize("limit_mb, failing", [(1, "best/model.safetensors"), (6, "checkpoints/step-00000001")])
def test_a_full_disk_while_writing_the_model_is_one_line_and_leaves_nothing(limit_mb, failing, tiny_bert_dir, data,
                                                                            tmp_path):
    """A real write error inside safetensors: the process may write no file larger than the limit,
    which the tiny model (4 MB) or its checkpoint's optimizer state (8 MB) exceed."""
    import resource
    import signal
    import subprocess
    import sys

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_mb * 2**20, limit_mb * 2**20))

    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "telly.cli", *finetune_args(tiny_bert_dir, data, out)],
                         capture_output=True, text=True, preexec_fn=limit_file_size, timeout=600)
    assert run.returncode == 2, run.stderr
    assert error_line_of(run.stderr) == f"telly: error: File too large: {out / failing}"
    assert not out.exists()  # it ended before its first checkpoint: nothing half-written, nothing to refuse


def test_a_full_disk_while_writing_a_later_checkpoint_keeps_the_earlier_one_whole(tiny_bert_dir, data, tmp_path,
                                                                                  capsys, monkeypatch):
    import safetensors

    import telly.checkpoints

    real_save_file = telly.checkpoints.save_file

    def full_disk_at_the_second_checkpoint(tensors, path):
        if "step-00000002" in str(path) and path.name == "optimizer.safetensors":
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        real_save_file(tensors, path)

    out = tmp_path / "run"
    argv = finetune_args(tiny_bert_dir, data, out, "--epochs", "2")
    monkeypatch.setattr(telly.checkpoints, "save_file", full_disk_at_the_second_checkpoint)
    capsys.readouterr()
    assert main(argv) == 2
    assert error_line_of(capsys.readouterr().err) == \
        f"telly: error: No space left on device: {out / 'checkpoints' / 'step-00000002'}"
    assert [path.name for path in (out / "checkpoints").iterdir()] == ["step-00000001"]
    assert not [path for path in out.rglob(".*")]  # no temporary file or folder anywhere
    monkeypatch.undo()  # space freed
    assert main([*argv, "--resume"]) == 0 and (out / "metrics.json").is_file()


def test_probe_skips_functions_nested_too_deeply_to_walk(tmp_path):
    from telly.study.probe_data import build_probe_set

    source = tmp_path / "src"
    shutil.copytree(EMAIL, source / "email")
    (source / "email" / "deep.py").write_text("def deep(x):\n    return " + "-" * 700 + "x\n")
    probe_set = build_probe_set([source], functions=40, seed=0)
    assert all("-" * 700 not in function.code for function in probe_set.train + probe_set.test)


def test_a_giant_line_is_read_whole_and_truncated_by_the_tokenizer(data, tokenizer):
    from telly.config import FinetuneConfig
    from telly.tasks.search import CodeSearchTask

    giant = "x = 1 " * 500_000  # a 3 MB code field
    set_field(data / "train.jsonl", 1, "code_tokens", giant.split())
    task = CodeSearchTask(FinetuneConfig(task="code-search", data=str(data), out="unused"))
    task.tokenizer, task.position_limit = tokenizer, 512
    [first, *_] = task.read_split(data, "train")
    assert len(first.code) == len(" ".join(giant.split()))
    assert task.tokenize([first.code], 64)["input_ids"].shape == (1, 64)


def test_an_output_folder_that_cannot_be_written_is_one_line(tiny_bert_dir, data, tmp_path, capsys, monkeypatch):
    # Tests run as root here, where permissions do not stop a write; the refusal is simulated where it happens.
    import pathlib

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    capsys.readouterr()
    assert main(finetune_args(tiny_bert_dir, data, tmp_path / "locked" / "run")) == 2
    [error_line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("telly: error:")]
    assert error_line.endswith("cannot create run folder " + str(tmp_path / "locked" / "run") + ": Permission denied")
