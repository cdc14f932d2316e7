"""A CodeSearchNet-format code search corpus built from real Python source files.

Every documented function (top level, method or nested) becomes one record: its code without the
docstring, the docstring's first paragraph as the natural-language query, and the tokens of both.
The default source is the running interpreter's standard library, so the corpus can be built
offline. Splits are made by source file, so no file's functions appear in two splits.

`read_split_corpus` is that reading and splitting on its own; the builders of the other tasks'
data (`telly.data.clones`, `telly.data.generation`) start from it.
"""

from __future__ import annotations

import ast
import functools
import io
import os
import random
import re
import sys
import sysconfig
import tokenize
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from telly.data.formats import write_jsonl
from telly.errors import UserError

# A docstring whose first paragraph has fewer words is not a usable query ("Return x.").
MIN_DOCSTRING_WORDS = 3

# Directories never walked. Test code seldom has docstrings, and the standard library's test
# directories hold deliberately broken or odd files; site-packages is third-party code.
SKIPPED_DIR_NAMES = frozenset({"__pycache__", "site-packages", "test", "tests", "idle_test"})

SPLITS = ("train", "valid", "test")

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef

_WORD_OR_PUNCTUATION = re.compile(r"[\w]+|[^\s\w]")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_LAYOUT_TOKENS = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NEWLINE,
        tokenize.NL,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
)


@dataclass(frozen=True)
class PythonFunction:
    """One documented function, ready to become a CodeSearchNet record."""

    path: str  # relative to the source root, with "/" separators
    func_name: str  # qualified: "Class.method", "outer.inner"
    code: str  # source without the docstring, dedented
    original_string: str  # source with the docstring, dedented
    docstring: str  # the whole docstring, cleaned with inspect.cleandoc
    code_tokens: tuple[str, ...]
    docstring_tokens: tuple[str, ...]  # of the docstring's first paragraph

    @property
    def name(self) -> str:
        """The name in the `def` line: `func_name` without its class or outer function."""
        return self.func_name.rsplit(".", 1)[-1]

    def to_codesearchnet(self, repo: str, partition: str = "") -> dict:
        """A record with every CodeSearchNet field, in the official order.

        `url` is empty: a function read from a local file has no public address.
        """
        return {
            "repo": repo,
            "path": self.path,
            "func_name": self.func_name,
            "original_string": self.original_string,
            "language": "python",
            "code": self.code,
            "code_tokens": list(self.code_tokens),
            "docstring": self.docstring,
            "docstring_tokens": list(self.docstring_tokens),
            "url": "",
            "partition": partition,
        }


def extract_functions(
    source: str, path: str, require_docstring: bool = True, min_statements: int = 0
) -> list[PythonFunction]:
    """Every function in `source` whose docstring's first paragraph has enough words.

    With `require_docstring=False`, every function, documented or not (a docstring is still cut
    out of `code`; an undocumented function has `docstring == ""`). Functions whose body, without
    the docstring, has fewer than `min_statements` statements (nested ones counted) are left out.
    Raises what `ast.parse` raises for source that does not parse. A function whose docstring
    cannot be cut out cleanly (it shares a line with other code) is left out rather than emitted
    with wrong code.
    """
    # Python itself treats CR and CRLF as line ends; normalising keeps AST line numbers valid.
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    lines = source.split("\n")
    functions = []
    for node, qualified_name in _functions_with_names(ast.parse(source)):
        if min_statements and _statement_count(node) < min_statements:
            continue
        docstring = ast.get_docstring(node, clean=True)
        first_paragraph = "" if docstring is None else docstring_summary(docstring)
        if require_docstring and len(first_paragraph.split()) < MIN_DOCSTRING_WORDS:
            continue
        function = _function_from_node(
            node, lines, path, qualified_name, docstring, first_paragraph
        )
        if function is not None:
            functions.append(function)
    return functions


def docstring_summary(docstring: str) -> str:
    """The docstring's first paragraph, its lines joined with single spaces."""
    return " ".join(_PARAGRAPH_BREAK.split(docstring, maxsplit=1)[0].split())


def _functions_with_names(tree: ast.AST, prefix: str = "") -> Iterator[tuple[_FunctionNode, str]]:
    """Yield `(function node, qualified name)` for every function, in source order."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = prefix + child.name
            if not isinstance(child, ast.ClassDef):
                yield child, name
            yield from _functions_with_names(child, name + ".")
        else:
            # Functions defined under `if`, `try`, `with`, ... keep the enclosing prefix.
            yield from _functions_with_names(child, prefix)


def _statement_count(node: _FunctionNode) -> int:
    """The statements in the function's body, nested ones included, a docstring not counted."""
    body = node.body[1:] if ast.get_docstring(node, clean=False) is not None else node.body
    return sum(isinstance(inner, ast.stmt) for statement in body for inner in ast.walk(statement))


def _function_from_node(
    node: _FunctionNode,
    lines: list[str],
    path: str,
    qualified_name: str,
    docstring: str | None,
    first_paragraph: str,
) -> PythonFunction | None:
    first_line = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    function_lines = _dedent(lines[first_line - 1 : node.end_lineno])
    if docstring is None:
        code_lines = function_lines
    elif _docstring_on_own_lines(node, lines):
        code_lines = _without_docstring(node, function_lines, first_line)
    else:
        return None
    code = "\n".join(code_lines)
    try:
        ast.parse(code)
    except SyntaxError:
        return None  # a layout the line-based cut does not handle; never emit broken code
    return PythonFunction(
        path=path,
        func_name=qualified_name,
        code=code,
        original_string="\n".join(function_lines),
        docstring=docstring or "",
        code_tokens=tuple(python_tokens(code)),
        docstring_tokens=tuple(_WORD_OR_PUNCTUATION.findall(first_paragraph)),
    )


def _without_docstring(
    node: _FunctionNode, function_lines: list[str], first_line: int
) -> list[str]:
    docstring_node = node.body[0]
    # The docstring's lines as 0-based indices into function_lines, end exclusive.
    doc_start = docstring_node.lineno - first_line
    doc_end = docstring_node.end_lineno - first_line + 1
    if len(node.body) == 1:
        # The body would be empty without the docstring; `pass` keeps it valid.
        indent = _leading_whitespace(function_lines[doc_start])
        return function_lines[:doc_start] + [indent + "pass"] + function_lines[doc_end:]
    return function_lines[:doc_start] + function_lines[doc_end:]


def _docstring_on_own_lines(node: _FunctionNode, lines: list[str]) -> bool:
    """Whether the docstring's lines hold nothing but the docstring (and perhaps a comment)."""
    docstring_node = node.body[0]
    start_line = lines[docstring_node.lineno - 1]
    # col_offset counts UTF-8 bytes, not characters.
    text_before = start_line.encode("utf-8")[: docstring_node.col_offset]
    if text_before.strip():
        return False  # e.g. `def f(): "doc"` on one line
    next_statement = node.body[1] if len(node.body) > 1 else None
    return next_statement is None or next_statement.lineno > docstring_node.end_lineno


def _dedent(lines: list[str]) -> list[str]:
    """Remove the first line's indentation from every line that starts with it.

    Unlike textwrap.dedent, a continuation or string line indented less than the `def` (say a
    multi-line string at column 0) does not stop the dedent: it is just left as it is.
    """
    indent = _leading_whitespace(lines[0])
    return [line[len(indent) :] if line.startswith(indent) else line for line in lines]


def _leading_whitespace(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def python_tokens(code: str) -> list[str]:
    """Python's own tokens of `code`, without comments and layout (newlines, indentation)."""
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return [token.string for token in tokens if token.type not in _LAYOUT_TOKENS]


@dataclass
class BuildSummary:
    """What a builder read, kept and dropped, and how the kept functions were split."""

    files_seen: int
    files_used: int  # files that gave at least one kept function
    skipped: dict[str, int]  # files skipped, by reason
    functions: int
    duplicates_dropped: int
    split_functions: dict[str, int]
    split_files: dict[str, int]

    def __str__(self) -> str:
        splits = " / ".join(
            f"{split} {self.split_functions[split]:,} ({self.split_files[split]:,} files)"
            for split in SPLITS
        )
        return (
            f"read {self.files_seen:,} files ({_counted('skipped', self.skipped)}); "
            f"{self.functions:,} functions from {self.files_used:,} files, "
            f"{self.duplicates_dropped:,} duplicates dropped; {splits}"
        )


@dataclass
class TaskDataSummary:
    """What a task-data builder made of the functions `read_split_corpus` gave it."""

    corpus: BuildSummary
    record_kind: str  # what one written record is, plural: "pairs", "examples"
    split_records: dict[str, int]
    left_out: dict[str, int]  # functions read but given no record, by reason

    def __str__(self) -> str:
        written = " / ".join(f"{split} {self.split_records[split]:,}" for split in SPLITS)
        left_out = _counted("functions left out", self.left_out)
        return f"{self.corpus}; {left_out}; wrote {written} {self.record_kind}"


def _counted(what: str, reasons: dict[str, int]) -> str:
    """"3 skipped: 1 not UTF-8, 2 unparsable" (reasons sorted by name)."""
    text = f"{sum(reasons.values()):,} {what}"
    if reasons:
        text += ": " + ", ".join(f"{count:,} {reason}" for reason, count in sorted(reasons.items()))
    return text


@dataclass
class SplitCorpus:
    """Functions read from Python files, every file's functions in one split."""

    # split -> [(repo, one file's functions)], files in source order
    files: dict[str, list[tuple[str, list[PythonFunction]]]]
    summary: BuildSummary

    def functions(self, split: str) -> list[PythonFunction]:
        """The split's functions in file order."""
        return [function for _, functions in self.files[split] for function in functions]


def default_sources() -> list[Path]:
    """The running interpreter's standard library directory."""
    return [Path(sysconfig.get_paths()["stdlib"])]


def build_code_search(
    sources: list[Path],
    out_dir: Path,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> BuildSummary:
    """Write `train.jsonl`, `valid.jsonl` and `test.jsonl` (CodeSearchNet format) into `out_dir`.

    One record per documented function, split by file as `read_split_corpus` describes. The same
    inputs and seed give byte-identical files.
    """
    out_dir = check_output_dir(out_dir)
    corpus = read_split_corpus(sources, seed, valid_fraction, test_fraction)
    for split in SPLITS:
        records = [
            function.to_codesearchnet(repo, partition=split)
            for repo, functions in corpus.files[split]
            for function in functions
        ]
        write_jsonl(out_dir / f"{split}.jsonl", records)
    return corpus.summary


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """`out_dir` as a Path, after checking it is not an existing file (the builders create it)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output path is a file, not a directory: {out_dir}")
    return out_dir


def read_split_corpus(
    sources: list[Path],
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    require_docstring: bool = True,
    min_statements: int = 0,
) -> SplitCorpus:
    """The functions of every Python file under `sources`, split by file.

    Walks every `*.py` file under each source (a directory or a single file) in sorted order,
    skipping the directories in SKIPPED_DIR_NAMES; files that cannot be read as UTF-8 or do not
    parse are skipped and counted. `require_docstring` and `min_statements` choose the functions
    as in `extract_functions`. Exact duplicates (same `code`) are dropped, the first one in file
    order kept. Whole files go to one split: the files are shuffled with `seed` and dealt to
    test, valid and train so that about `test_fraction` and `valid_fraction` of the functions land
    in test and valid.
    """
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise UserError(
            f"valid and test fractions must be >= 0 and sum to less than 1, "
            f"got {valid_fraction} and {test_fraction}"
        )
    files = _source_files([Path(source) for source in sources])
    extract = functools.partial(
        extract_functions, require_docstring=require_docstring, min_statements=min_statements
    )
    functions_by_file, skipped, duplicates = _read_unique_functions(files, extract)
    if not functions_by_file:
        wanted = "documented functions" if require_docstring else "functions"
        if min_statements:
            wanted += f" of at least {min_statements} statements"
        raise UserError(f"no {wanted} found in {', '.join(map(str, sources))}")

    function_counts = [len(functions) for _, functions in functions_by_file]
    split_of_file = _assign_splits(function_counts, seed, valid_fraction, test_fraction)
    files_by_split = {
        split: [pair for pair, name in zip(functions_by_file, split_of_file) if name == split]
        for split in SPLITS
    }
    summary = BuildSummary(
        files_seen=len(files),
        files_used=len(functions_by_file),
        skipped=skipped,
        functions=sum(function_counts),
        duplicates_dropped=duplicates,
        split_functions={
            split: sum(len(functions) for _, functions in chosen)
            for split, chosen in files_by_split.items()
        },
        split_files={split: len(chosen) for split, chosen in files_by_split.items()},
    )
    return SplitCorpus(files_by_split, summary)


def _read_unique_functions(
    files: list[tuple[Path, Path]], extract: Callable[[str, str], list[PythonFunction]]
) -> tuple[list[tuple[str, list[PythonFunction]]], dict[str, int], int]:
    """Read every file; return `[(repo, functions)]` per file that gave any, skips, duplicates.

    A function whose code was already seen in an earlier file (or earlier in the same file) is a
    duplicate and dropped.
    """
    skipped: Counter[str] = Counter()
    seen_code: set[str] = set()
    duplicates = 0
    functions_by_file = []
    progress = tqdm(files, desc="reading Python files", unit="file", disable=None, file=sys.stderr)
    for root, path in progress:
        functions, skip_reason = _read_functions(root, path, extract)
        if skip_reason:
            skipped[skip_reason] += 1
            continue
        unique = []
        for function in functions:
            if function.code in seen_code:
                duplicates += 1
            else:
                seen_code.add(function.code)
                unique.append(function)
        if unique:
            functions_by_file.append((root.name, unique))
    return functions_by_file, dict(skipped), duplicates


def _source_files(sources: list[Path]) -> list[tuple[Path, Path]]:
    """`(source root, file)` for every Python file to read, in a deterministic order."""
    files = []
    for source in sources:
        if source.is_file():
            files.append((source.parent, source))
        elif source.is_dir():
            files.extend((source, path) for path in _python_files_under(source))
        else:
            raise UserError(f"no such file or directory: {source}")
    return files


def _python_files_under(root: Path) -> list[Path]:
    found = []
    for directory, subdirectories, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending into skipped directories.
        subdirectories[:] = [name for name in subdirectories if name not in SKIPPED_DIR_NAMES]
        found.extend(Path(directory, name) for name in filenames if name.endswith(".py"))
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _read_functions(
    root: Path, path: Path, extract: Callable[[str, str], list[PythonFunction]]
) -> tuple[list[PythonFunction], str | None]:
    """The functions `extract` finds in the file, or the reason the file was skipped."""
    try:
        source = path.read_bytes().decode("utf-8-sig")
    except OSError:
        return [], "unreadable"
    except UnicodeDecodeError:
        return [], "not UTF-8"
    # Checked up front: Python versions disagree on which exception a NUL byte raises.
    if "\0" in source:
        return [], "with NUL bytes"
    try:
        return extract(source, path.relative_to(root).as_posix()), None
    except SyntaxError:  # includes IndentationError
        return [], "unparsable"
    except (RecursionError, MemoryError):
        return [], "too deep to parse"


def _assign_splits(
    function_counts: list[int], seed: int, valid_fraction: float, test_fraction: float
) -> list[str]:
    """The split of each file, so that about the given fractions of functions go to test/valid.

    Files are shuffled and laid end to end; a file goes to test if its midpoint falls in the first
    `test_fraction` of all functions, to valid if in the next `valid_fraction`, else to train.
    Using the midpoint keeps a single big file from overshooting a small split.
    """
    order = list(range(len(function_counts)))
    random.Random(seed).shuffle(order)
    total = sum(function_counts)
    test_end = test_fraction * total
    valid_end = test_end + valid_fraction * total
    splits = [""] * len(function_counts)
    position = 0
    for index in order:
        midpoint = position + function_counts[index] / 2
        if midpoint < test_end:
            splits[index] = "test"
        elif midpoint < valid_end:
            splits[index] = "valid"
        else:
            splits[index] = "train"
        position += function_counts[index]
    return splits
