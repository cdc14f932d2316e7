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
from pathlib import Path

from telly.errors import UserError
from telly.files import atomic_open

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
    if not path.is_file():
        raise UserError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    try:
        # Binary lines decoded one by one, so a bad byte is reported on its own line.
        with (gzip.open(path) if path.name.endswith(".gz") else open(path, "rb")) as lines:
            for line_number, raw_line in enumerate(lines, start=1):
                line = _decode(raw_line, path, line_number)
                if line.strip():
                    yield line_number, _parse_object(line, path, line_number)
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
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path} line {line_number}: not valid JSON ({error.msg})") from None
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
    a string).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"no such directory: {data_dir}")
    files = _find_split_files(data_dir, split)
    required = tuple(required)
    records = []
    for path in files:
        for line_number, record in iter_jsonl(path):
            _check_fields(record, required, path, line_number)
            records.append(record)
    if not records:
        raise UserError(f"empty split: {split} (no records in {', '.join(map(str, files))})")
    return records


def _split_file_patterns(split: str) -> tuple[str, ...]:
    return (
        f"{split}.jsonl",
        f"{split}.jsonl.gz",
        f"final/jsonl/{split}/*_{split}_*.jsonl.gz",
        f"{split}/*.jsonl.gz",
    )


def _find_split_files(data_dir: Path, split: str) -> list[Path]:
    patterns = _split_file_patterns(split)
    for pattern in patterns:
        files = sorted(path for path in data_dir.glob(pattern) if path.is_file())
        if files:
            return files
    raise UserError(f"no {split} data in {data_dir}: looked for {', '.join(patterns)}")


def _check_fields(record: dict, required: tuple[str, ...], path: Path, line_number: int) -> None:
    where = f"{path} line {line_number}"
    for field in required:
        if field not in record:
            raise UserError(f'{where}: missing field "{field}"')
        value = record[field]
        if field.endswith("_tokens"):
            if not (isinstance(value, list) and all(isinstance(token, str) for token in value)):
                raise UserError(f'{where}: field "{field}" must be a list of strings')
        elif field in CODESEARCHNET_FIELDS and not isinstance(value, str):
            raise UserError(f'{where}: field "{field}" must be a string')
