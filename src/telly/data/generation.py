"""Code generation (CONCODE-style) and line-level completion (CodeXGLUE-style) data from real code.

Both start from the functions `read_split_corpus` reads, split by source file, and write
`train.jsonl`, `valid.jsonl` and `test.jsonl`. The language plug-in gives each function's
signature and body, and its lines (`telly.data.languages`); the records are built here alike for
every language.

Code generation, one record per documented function: `{"nl": ..., "code": ...}` where
    nl   = "<doc summary, whitespace collapsed> signature: <the signature>"
    code = the function's body.
Python normalises code with `ast.unparse` (one layout, 4-space indents, no comments, no blank
lines; the docstring cut out): signature "def total(items, start=0):" (decorators left out), code
the body dedented to column 0, lines joined by "\\n". Java and Ruby write both as their tokens
joined by single spaces, as CONCODE does.

Line completion, one record per function (documented or not): `{"input": ..., "gt": ...}` where
    input = "<s> " + " <EOL> ".join(the lines before the cut) + " <EOL>"
    gt    = the line after the cut, stripped of its indentation.
Python lines keep their indentation ("<s> def f(x): <EOL>     y = x <EOL>"); Java and Ruby lines
are their tokens joined by spaces with literals replaced by <STR_LIT>, <NUM_LIT> and <CHAR_LIT>,
as CodeXGLUE's Java corpus is. The cut falls after a seeded random line, never before the first.
Training data has the same form (one cut per function), so a causal language model can train on
`input` followed by `gt`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from telly.data.corpus import (
    MAX_FILE_MB,
    SPLITS,
    SplitCorpus,
    TaskDataSummary,
    new_data_folder,
    read_split_corpus,
)
from telly.data.formats import write_jsonl
from telly.data.language import CodeFunction
from telly.data.languages import LANGUAGES
from telly.data.parallel import ordered_map

LINE_START = "<s>"
LINE_END = "<EOL>"

# Functions a worker process makes records of at a time (`jobs`).
FUNCTIONS_PER_CHUNK = 64

# A record, or the reason the function gives none; picklable, for worker processes.
_MakeRecord = Callable[[CodeFunction], dict | str]


def build_code_generation(
    sources: list[Path],
    out_dir: Path,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    language: str = "python",
    overwrite: bool = False,
    max_file_mb: float = MAX_FILE_MB,
    jobs: int | None = None,
) -> TaskDataSummary:
    """Write CONCODE-style `{"nl", "code"}` JSON lines for every documented function (into
    `out_dir` as `new_data_folder` says), the same whatever the number of worker processes
    (`jobs`, as `read_split_corpus` says)."""
    with new_data_folder(out_dir, sources, overwrite) as folder:
        corpus = read_split_corpus(sources, seed, valid_fraction, test_fraction, language=language,
                                   max_file_mb=max_file_mb, jobs=jobs)
        return _write_records(corpus, folder, functools.partial(_generation_record, language), jobs)


def build_line_completion(
    sources: list[Path],
    out_dir: Path,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    language: str = "python",
    overwrite: bool = False,
    max_file_mb: float = MAX_FILE_MB,
    jobs: int | None = None,
) -> TaskDataSummary:
    """Write CodeXGLUE-style `{"input", "gt"}` JSON lines, one cut per function (into `out_dir` as
    `new_data_folder` says), the same whatever the number of worker processes (`jobs`).

    The cut of each function depends only on `seed` and the function's code.
    """
    with new_data_folder(out_dir, sources, overwrite) as folder:
        corpus = read_split_corpus(
            sources, seed, valid_fraction, test_fraction, require_docstring=False, language=language,
            max_file_mb=max_file_mb, jobs=jobs,
        )
        return _write_records(corpus, folder, functools.partial(_line_completion_record, language, seed), jobs)


def _generation_record(language: str, function: CodeFunction) -> dict | str:
    example = LANGUAGES[language].generation_example(function)
    if isinstance(example, str):
        return example
    signature, body = example
    return {"nl": f"{function.summary} signature: {signature}", "code": body}


def _line_completion_record(language: str, seed: int, function: CodeFunction) -> dict | str:
    lines = LANGUAGES[language].completion_lines(function)
    if isinstance(lines, str):
        return lines
    return _completion_record(lines, random.Random(f"{seed}:{function.code}"))


def _write_records(corpus: SplitCorpus, out_dir: Path, make_record: _MakeRecord, jobs: int | None) -> TaskDataSummary:
    """One record per function that gives one, `{split}.jsonl` per split; what was left out, why.
    `jobs` worker processes make the records (`ordered_map`)."""
    left_out: Counter[str] = Counter()
    split_records = {}
    functions = [corpus.functions(split) for split in SPLITS]
    every_function = [function for split in functions for function in split]
    with contextlib.closing(ordered_map(make_record, every_function, jobs, FUNCTIONS_PER_CHUNK)) as made:
        for split, split_functions in zip(SPLITS, functions):
            records = []
            for record in itertools.islice(made, len(split_functions)):
                if isinstance(record, str):
                    left_out[record] += 1
                else:
                    records.append(record)
            write_jsonl(out_dir / f"{split}.jsonl", records)
            split_records[split] = len(records)
    return TaskDataSummary(corpus.summary, "examples", split_records, dict(left_out))


def _completion_record(lines: list[str], rng: random.Random) -> dict | str:
    if len(lines) < 2:
        return "a single line"  # nothing before the line to complete
    if any(marker in line for line in lines for marker in (LINE_START, LINE_END)):
        return f"code contains {LINE_START} or {LINE_END}"
    cut = rng.randrange(1, len(lines))  # at least the first line is given
    prefix = f" {LINE_END} ".join(lines[:cut])
    return {"input": f"{LINE_START} {prefix} {LINE_END}", "gt": lines[cut].strip()}
