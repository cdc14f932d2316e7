"""Readers and writers for the official data formats (see REFERENCE.md, "Downstream tasks").

Every reader turns a malformed input into one `UserError` that names the file and, where there is
one, the 1-based line number, so a user can open the file and fix it.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from telly.errors import UserError
from telly.files import atomic_open, parse_json

CODESEARCHNET_FIELDS = (
    "repo",
    "path",
    "func_name",
    "original_string",
    "language",
    "code",
    "code_tokens",
    "docstring",
    "docstring_tokens",
    "url",
    "partition",
)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a `.jsonl` or `.jsonl.gz` file, one JSON object per non-blank line."""
    return [record for _, record in iter_jsonl(path)]


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, record)` for each non-blank line, line numbers 1-based.

    Tolerates a UTF-8 byte-order mark and CRLF line ends. Readers that validate records use the
    line number to point at the offending line.
    """
    path = Path(path)
    for line_number, line in iter_text_lines(path):
        yield line_number, _parse_object(line, path, line_number)


def iter_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, line)` for each non-blank line of a text file (`.gz`: compressed).

    Line numbers are 1-based; a UTF-8 byte-order mark and CR/LF line ends are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    try:
        # Binary lines decoded one by one, so a bad byte is reported on its own line.
        with (gzip.open(path) if path.name.endswith(".gz") else open(path, "rb")) as lines:
            for line_number, raw_line in enumerate(lines, start=1):
                line = _decode(raw_line, path, line_number).rstrip("\r\n")
                if line.strip():
                    yield line_number, line
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UserError(f"{path}: not a valid gzip file ({error})") from None


def _decode(raw_line: bytes, path: Path, line_number: int) -> str:
    try:
        # "utf-8-sig" drops a byte-order mark, which can only start the first line.
        return raw_line.decode("utf-8-sig" if line_number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} line {line_number}: not UTF-8 text ({error.reason})") from None


def _parse_object(line: str, path: Path, line_number: int) -> dict:
    try:
        record = parse_json(line)
    except ValueError as error:
        raise UserError(f"{path} line {line_number}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        kind = type(record).__name__
        raise UserError(f"{path} line {line_number}: expected a JSON object, got {kind}")
    return record


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Write one JSON object per line, UTF-8, atomically; gzip-compressed if the name ends in .gz.

    A reader never sees a half-written file (see `atomic_open`). Gzip output carries no
    timestamp, so equal records give byte-identical files.
    """
    path = Path(path)
    with atomic_open(path, "wb") as raw:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(path.name, "wb", fileobj=raw, mtime=0) as compressed:
                _write_lines(compressed, records)
        else:
            _write_lines(raw, records)


def _write_lines(stream, records: Iterable[dict]) -> None:
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")


def read_codesearchnet_split(
    data_dir: str | os.PathLike,
    split: str,
    required: Iterable[str] = ("code_tokens", "docstring_tokens"),
) -> list[dict]:
    """The records of one split (`train`, `valid`, `test`) of a CodeSearchNet-format data set.

    Accepts the CodeXGLUE layout (`DIR/train.jsonl`, also gzip-compressed, which is what our
    builder writes) and the official CodeSearchNet release layout
    (`DIR/final/jsonl/train/python_train_0.jsonl.gz`, ... or `DIR/train/*.jsonl.gz`). The first
    layout that has files wins; its files are read in sorted name order. Every record must hold
    the `required` fields with the right type (`*_tokens`: a list of strings; other CSN fields:
    a string), and not empty: they are a model's inputs and targets.
    """
    patterns = (
        f"{split}.jsonl",
        f"{split}.jsonl.gz",
        f"final/jsonl/{split}/*_{split}_*.jsonl.gz",
        f"{split}/*.jsonl.gz",
    )
    required = tuple(required)
    return _read_split_records(
        data_dir, split, patterns, required, string_fields=CODESEARCHNET_FIELDS, non_blank=required
    )


def read_concode(data_dir: str | os.PathLike, split: str) -> list[dict]:
    """The `{"nl", "code"}` records of one split of a CONCODE-format (code generation) data set.

    Reads `DIR/{split}.jsonl` (what our builder writes) or `DIR/{split}.json` (the CodeXGLUE file
    name; CodeXGLUE calls the validation split `dev`, so `valid` also finds `dev.json`). Both
    fields must be strings and `code`, the generation target, must not be blank.
    """
    return _read_split_records(
        data_dir, split, _json_lines_patterns(split), ("nl", "code"), non_blank=("code",)
    )


def read_line_completion(data_dir: str | os.PathLike, split: str) -> list[dict]:
    """The `{"input", "gt"}` records of one split of a CodeXGLUE line-completion data set.

    File names as for `read_concode`. `input` is kept exactly as written: the code before the line
    to complete, starting with `<s> ` and with ` <EOL> ` where a line ends (our builder keeps each
    line's indentation and ends `input` with ` <EOL>`); `gt` is that line, which must not be
    blank.
    """
    return _read_split_records(
        data_dir, split, _json_lines_patterns(split), ("input", "gt"), non_blank=("gt",)
    )


def _json_lines_patterns(split: str) -> tuple[str, ...]:
    names = (split, "dev") if split == "valid" else (split,)
    return tuple(f"{name}{ext}" for name in names for ext in (".jsonl", ".jsonl.gz", ".json"))


def _read_split_records(
    data_dir: str | os.PathLike,
    split: str,
    patterns: tuple[str, ...],
    required: tuple[str, ...],
    string_fields: Iterable[str] | None = None,
    non_blank: tuple[str, ...] = (),
) -> list[dict]:
    """Every record of the first of `patterns` that names files in `data_dir`, each validated.

    Fields in `string_fields` (default: all `required` ones) must be strings, `*_tokens` fields
    lists of strings, and `non_blank` fields must hold more than whitespace.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"no such directory: {data_dir}")
    files = _find_split_files(data_dir, split, patterns)
    string_fields = frozenset(required if string_fields is None else string_fields)
    records = []
    for path in files:
        for line_number, record in iter_jsonl(path):
            _check_fields(record, required, string_fields, non_blank, f"{path} line {line_number}")
            records.append(record)
    if not records:
        raise UserError(f"empty split: {split} (no records in {', '.join(map(str, files))})")
    return records


def _find_split_files(data_dir: Path, split: str, patterns: tuple[str, ...]) -> list[Path]:
    for pattern in patterns:
        files = sorted(path for path in data_dir.glob(pattern) if path.is_file())
        if files:
            return files
    raise UserError(f"no {split} data in {data_dir}: looked for {', '.join(patterns)}")


def _check_fields(
    record: dict,
    required: tuple[str, ...],
    string_fields: frozenset[str],
    non_blank: tuple[str, ...],
    where: str,
) -> None:
    for field in required:
        if field not in record:
            raise UserError(f'{where}: missing field "{field}"')
        value = record[field]
        if field.endswith("_tokens"):
            if not (isinstance(value, list) and all(isinstance(token, str) for token in value)):
                raise UserError(f'{where}: field "{field}" must be a list of strings')
        elif field in string_fields and not isinstance(value, str):
            raise UserError(f'{where}: field "{field}" must be a string')
        if field in non_blank and not (value.strip() if isinstance(value, str) else value):
            raise UserError(f'{where}: field "{field}" is empty')


@dataclass
class ClonePairs:
    """One split of a BigCloneBench-format clone detection data set."""

    functions: dict[str, str]  # idx -> source code, every function of data.jsonl
    pairs: list[tuple[str, str, int]]  # (idx1, idx2, label): 1 = clones, 0 = not


def read_bigclonebench(data_dir: str | os.PathLike, split: str) -> ClonePairs:
    """`DIR/data.jsonl` (`{"func": str, "idx": str or int}`) and the pairs of `DIR/{split}.txt`.

    A pair line is `idx1<TAB>idx2<TAB>label` (any whitespace accepted), label 0 or 1; each idx
    must be in data.jsonl. Integer idx values are read as their decimal strings.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"no such directory: {data_dir}")
    functions = _read_clone_functions(data_dir / "data.jsonl")
    pairs_path = data_dir / f"{split}.txt"
    pairs = [
        _parse_clone_pair(line, functions, f"{pairs_path} line {line_number}")
        for line_number, line in iter_text_lines(pairs_path)
    ]
    if not pairs:
        raise UserError(f"empty split: {split} (no pairs in {pairs_path})")
    return ClonePairs(functions, pairs)


def _read_clone_functions(path: Path) -> dict[str, str]:
    functions: dict[str, str] = {}
    for line_number, record in iter_jsonl(path):
        where = f"{path} line {line_number}"
        _check_fields(record, ("func", "idx"), frozenset({"func"}), (), where)
        idx = record["idx"]
        if isinstance(idx, bool) or not isinstance(idx, (str, int)):
            raise UserError(f'{where}: field "idx" must be a string or an integer')
        idx = str(idx)
        if idx in functions:
            raise UserError(f"{where}: duplicate idx {idx}")
        functions[idx] = record["func"]
    return functions


def _parse_clone_pair(line: str, functions: dict[str, str], where: str) -> tuple[str, str, int]:
    fields = line.split()
    if len(fields) != 3:
        raise UserError(f"{where}: expected idx1, idx2 and a label, got {len(fields)} fields")
    first, second, label = fields
    if label not in ("0", "1"):
        raise UserError(f"{where}: label must be 0 or 1, got {label!r}")
    for idx in (first, second):
        if idx not in functions:
            raise UserError(f"{where}: unknown idx {idx} (not in data.jsonl)")
    return first, second, int(label)


def write_bigclonebench(
    out_dir: str | os.PathLike,
    functions: dict[str, str],
    splits: dict[str, list[tuple[str, str, int]]],
) -> None:
    """Write `data.jsonl` and one `{split}.txt` of `idx1<TAB>idx2<TAB>label` lines per split."""
    out_dir = Path(out_dir)
    records = ({"func": code, "idx": idx} for idx, code in functions.items())
    write_jsonl(out_dir / "data.jsonl", records)
    for split, pairs in splits.items():
        with atomic_open(out_dir / f"{split}.txt") as stream:
            stream.writelines(f"{first}\t{second}\t{label}\n" for first, second, label in pairs)
