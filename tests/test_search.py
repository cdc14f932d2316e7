"""`telly search`: a code-search run's encoder over every function of a real source tree (the
standard library's `json` package, copied here), its index kept on disk and brought up to date."""

import ast
import json
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from telly.cli import main
from telly.runtime import CPU
from telly.use.search import search

JSON_PACKAGE = Path(sysconfig.get_paths()["stdlib"]) / "json"
TRAINING = ["--freeze", "1", "--batch-size", "16", "--lr", "1e-3", "--max-code-len", "64", "--max-nl-len", "32",
            "--max-train-examples", "32", "--max-eval-examples", "16", "--seed", "1"]


@pytest.fixture(scope="module")
def search_run(tiny_bert_dir, email_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "search"
    assert main(["finetune", "--task", "code-search", "--model", str(tiny_bert_dir), "--data", str(email_corpus),
                 "--out", str(out), *TRAINING]) == 0
    return out


def function_lines(path: Path) -> list[int]:
    """Where each function of a Python file starts (its first decorator, else `def`), by `ast`."""
    return sorted(node.decorator_list[0].lineno if node.decorator_list else node.lineno
                  for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))


def find(run, sources, index, query="parse a JSON document from a string", top=5):
    return search(run, query, [sources], "python", top=top, max_file_mb=10, index_folder=index, runtime=CPU)


def test_the_index_is_built_once_and_a_changed_file_is_encoded_alone(search_run, tmp_path):
    sources = tmp_path / "json"
    shutil.copytree(JSON_PACKAGE, sources, ignore=shutil.ignore_patterns("__pycache__"))
    every = {path.name: function_lines(path) for path in sorted(sources.rglob("*.py"))}
    total = sum(len(lines) for lines in every.values())
    index = tmp_path / "index"

    matches, update = find(search_run, sources, index)
    assert (update.files, update.functions, update.encoded) == (len(every), total, total)
    assert sorted(path.name for path in index.iterdir()) == ["index.json", "vectors.safetensors"]
    vectors = load_file(index / "vectors.safetensors")["vectors"]
    assert vectors.shape == (total, 32) and torch.allclose(vectors.norm(dim=1), torch.ones(total), atol=1e-5)
    stored = json.loads((index / "index.json").read_text())
    assert {Path(file).name: sorted(f["line"] for f in entry["functions"]) for file, entry in stored["files"].items()} == every
    assert len(matches) == 5 and [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    for match in matches:  # file:line is where that function starts
        line = Path(match.file).read_text().splitlines()[match.line - 1].strip()
        assert line.startswith(("def ", "async def ", "@")) and (line.startswith("@") or match.function.split(".")[-1] in line)

    written = (index / "index.json").stat().st_mtime_ns
    again, update = find(search_run, sources, index)
    assert update.encoded == 0 and again == matches
    assert (index / "index.json").stat().st_mtime_ns == written  # nothing changed, nothing rewritten

    changed = sources / "decoder.py"
    changed.write_text(changed.read_text() + "\n\ndef added_for_the_test(text):\n    return text.strip()\n")
    _, update = find(search_run, sources, index)
    assert update.encoded == len(every["decoder.py"]) + 1 and update.functions == total + 1
    (sources / "tool.py").unlink()
    _, update = find(search_run, sources, index)
    assert update.encoded == 0 and update.functions == total + 1 - len(every["tool.py"])


def test_new_weights_re_encode_everything(search_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(search_run, run)
    index = tmp_path / "index"
    _, first = find(run, JSON_PACKAGE, index)
    weights = load_file(run / "best" / "model.safetensors")
    name = next(name for name in weights if name.endswith("LayerNorm.weight"))
    save_file({**weights, name: weights[name] * 1.5}, run / "best" / "model.safetensors")
    _, update = find(run, JSON_PACKAGE, index)
    assert update.encoded == first.functions == first.encoded > 0


def test_search_prints_file_line_and_score_or_json(search_run, tmp_path, capsys):
    argv = ["search", str(search_run), "encode a string as JSON", "--sources", str(JSON_PACKAGE), "--top", "3",
            "--index", str(tmp_path / "index")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert main([*argv, "--json"]) == 0
    matches = json.loads(capsys.readouterr().out)
    assert len(lines) == len(matches) == 3
    for line, match in zip(lines, matches):
        assert line == f"{match['score']:.4f}  {match['file']}:{match['line']}  {match['function']}"
        assert Path(match["file"]).parent == JSON_PACKAGE


@pytest.mark.parametrize("language, sources, definition", [("java", "java_sources", "public int {}("),
                                                           ("ruby", "ruby_sources", "def {}(")])
def test_java_and_ruby_functions_know_their_line(language, sources, definition, request):
    from telly.data import language_named

    path = request.getfixturevalue(sources) / ("Case3.java" if language == "java" else "case3.rb")
    lines = path.read_text().splitlines()
    functions = language_named(language).extract_functions(path.read_text(), path.name, require_docstring=False)
    assert len(functions) == 4
    for function in functions:
        assert lines[function.line - 1].strip().startswith(definition.format(function.name))
