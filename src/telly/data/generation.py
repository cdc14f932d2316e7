"""Code generation (CONCODE-style) and line-level completion (CodeXGLUE-style) data from Python.

Both start from the functions `read_split_corpus` reads, split by source file, and write
`train.jsonl`, `valid.jsonl` and `test.jsonl`. Code is normalised with `ast.unparse` (one layout,
4-space indents, no comments, no blank lines; the docstring cut out), so targets hold code only.

Code generation, one record per documented function: `{"nl": ..., "code": ...}` where
    nl   = "<docstring's first paragraph, whitespace collapsed> signature: <def line>"
           e.g. "Return the sum of the items. signature: def total(items, start=0):"
           (the def line normalised to one line, decorators left out)
    code = the function's body without the docstring, dedented to column 0, lines joined by "\\n".

Line completion, one record per function (documented or not): `{"input": ..., "gt": ...}` where
    input = "<s> " + " <EOL> ".join(the lines before the cut) + " <EOL>"
            (each line keeps its indentation, so "<s> def f(x): <EOL>     y = x <EOL>")
    gt    = the line after the cut, stripped of its indentation.
The cut falls after a seeded random line, never before the first. Training data has the same form
(one cut per function), so a causal language model can train on `input` followed by `gt`.
"""

from __future__ import annotations

import ast
import copy
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from telly.data.formats import write_jsonl
from telly.data.python_corpus import (
    SPLITS,
    PythonFunction,
    SplitCorpus,
    TaskDataSummary,
    check_output_dir,
    docstring_summary,
    read_split_corpus,
)

LINE_START = "<s>"
LINE_END = "<EOL>"

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
# A record, or the reason the function gives none.
_MakeRecord = Callable[[PythonFunction, _FunctionNode], dict | str]


def build_code_generation(
    sources: list[Path],
    out_dir: Path,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> TaskDataSummary:
    """Write CONCODE-style `{"nl", "code"}` JSON lines for every documented function."""
    out_dir = check_output_dir(out_dir)
    corpus = read_split_corpus(sources, seed, valid_fraction, test_fraction)
    return _write_records(corpus, out_dir, _generation_record)


def build_line_completion(
    sources: list[Path],
    out_dir: Path,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> TaskDataSummary:
    """Write CodeXGLUE-style `{"input", "gt"}` JSON lines, one cut per function.

    The cut of each function depends only on `seed` and the function's code.
    """
    out_dir = check_output_dir(out_dir)
    corpus = read_split_corpus(
        sources, seed, valid_fraction, test_fraction, require_docstring=False
    )

    def record(function: PythonFunction, node: _FunctionNode) -> dict | str:
        return _completion_record(node, random.Random(f"{seed}:{function.code}"))

    return _write_records(corpus, out_dir, record)


def _write_records(corpus: SplitCorpus, out_dir: Path, make_record: _MakeRecord) -> TaskDataSummary:
    """One record per function with a body, `{split}.jsonl` per split; what was left out, why."""
    left_out: Counter[str] = Counter()
    split_records = {}
    for split in SPLITS:
        records = []
        for function in corpus.functions(split):
            node = ast.parse(function.code).body[0]
            try:
                record = "empty body" if _is_empty(node.body) else make_record(function, node)
            except RecursionError:
                record = "too deep to unparse"
            if isinstance(record, str):
                left_out[record] += 1
            else:
                records.append(record)
        write_jsonl(out_dir / f"{split}.jsonl", records)
        split_records[split] = len(records)
    return TaskDataSummary(corpus.summary, "examples", split_records, dict(left_out))


def _is_empty(body: list[ast.stmt]) -> bool:
    """A body of only `pass` or `...`: nothing to generate or complete."""
    return all(
        isinstance(statement, ast.Pass)
        or (isinstance(statement, ast.Expr) and getattr(statement.value, "value", None) is ...)
        for statement in body
    )


def _generation_record(function: PythonFunction, node: _FunctionNode) -> dict:
    nl = f"{docstring_summary(function.docstring)} signature: {_signature(node)}"
    return {"nl": nl, "code": ast.unparse(ast.Module(body=node.body, type_ignores=[]))}


def _signature(node: _FunctionNode) -> str:
    """The def line, normalised to one line: `def total(items, start=0) -> int:`."""
    header = copy.copy(node)
    header.decorator_list, header.body, header.type_comment = [], [ast.Pass()], None
    return ast.unparse(header).split("\n", 1)[0]


def _completion_record(node: _FunctionNode, rng: random.Random) -> dict | str:
    lines = [line for line in ast.unparse(node).split("\n") if line.strip()]
    if any(marker in line for line in lines for marker in (LINE_START, LINE_END)):
        return f"code contains {LINE_START} or {LINE_END}"
    cut = rng.randrange(1, len(lines))  # at least the first line is given
    prefix = f" {LINE_END} ".join(lines[:cut])
    return {"input": f"{LINE_START} {prefix} {LINE_END}", "gt": lines[cut].strip()}
