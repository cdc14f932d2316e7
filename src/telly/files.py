"""Writing result files so that a reader never sees half of one, and reading JSON that may be anything."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Iterator

from safetensors import SafetensorError

from telly.errors import UserError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write a file or a folder at. When the block
    ends cleanly its files are fsynced and it is renamed over `path` in one step; when it fails, it
    is removed. safetensors reports a failed write (a
    full disk) as SafetensorError: it becomes the OSError it is, naming `path`. A folder is
    replaced in two renames; a kill between them leaves the old and the new one complete, as
    temporaries (`remove_temporaries`), and nothing at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(temporary)  # left by a killed process of the same id
    try:
        try:
            yield temporary
        except SafetensorError as error:
            raise _os_error(error, path) from None
        for written in temporary.iterdir() if temporary.is_dir() else [temporary]:
            _fsync(written)
        replaced = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
        if temporary.is_dir() and path.is_dir():  # a folder is renamed aside, not over: rename(2) wants it empty
            os.replace(path, replaced)
        os.replace(temporary, path)
        _fsync(path.parent)
        _remove(replaced)
    except BaseException:
        _remove(temporary)
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A temporary file beside `path`, renamed over it when the block ends cleanly (see `atomic_path`).

    A plain open (not tempfile, which makes 0600 files) so the result gets the usual permissions.
    """
    encoding = {} if "b" in mode else {"encoding": "utf-8"}
    with atomic_path(path) as temporary, open(temporary, mode, **encoding) as stream:
        yield stream


def is_temporary(path: Path) -> bool:
    """Whether `path` is what an interrupted write leaves: `atomic_path`'s `.NAME.PID.tmp`, or the
    `.tmpXXXXXX` file safetensors writes before renaming it."""
    return path.name.startswith(".") and (path.name.endswith(".tmp") or path.name.startswith(".tmp"))


def remove_temporaries(folder: Path, of: str | None = None) -> None:
    """Remove the temporary files and folders that killed writes left in `folder` (they can be as
    large as a model, and nothing else ever removes them); with `of`, only those of that name's."""
    if Path(folder).is_dir():
        for path in Path(folder).iterdir():
            if is_temporary(path) and (of is None or path.name.startswith(f".{of}.")):
                _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _os_error(error: SafetensorError, path: Path) -> Exception:
    """The OSError behind a SafetensorError like "Error while serializing: I/O error: No space left on
    device (os error 28)"; the error itself when it was no I/O error."""
    code = re.search(r"\(os error (\d+)\)", str(error))
    return OSError(int(code[1]), os.strerror(int(code[1])), str(path)) if code else error


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as stream:
        stream.write(text)


def write_json(path: str | os.PathLike, data) -> None:
    atomic_write_text(path, json_text(data, path, indent=2) + "\n")


def json_text(data, path: str | os.PathLike, indent: int | None = None) -> str:
    """`data` as standard JSON, for the file `path`. Python's json would write NaN and Infinity,
    which other readers reject; a value like that is refused, naming where it is."""
    try:
        return json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:
        where = _non_finite_value(data)
        if where is None:
            raise
        raise ValueError(f"cannot write {path}: {where} is not a finite number, which JSON cannot hold") from None


def _non_finite_value(data, where: str = "the value") -> str | None:
    """Where in `data` the first NaN or infinity is (`the value['test']['mrr'] = nan`), or None."""
    if isinstance(data, float):
        return None if math.isfinite(data) else f"{where} = {data}"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite_value(value, f"{where}[{key!r}]")
        if found:
            return found
    return None


class _NotJson(ValueError):
    pass


def _refuse(constant: str):
    raise _NotJson(f"{constant} is not a JSON value")


def parse_json(text: str):
    """The JSON value of `text`. Every way a text can fail to be JSON is a ValueError that says why
    in a few words: malformed, NaN or Infinity (which Python's json reads, and older telly wrote
    into the metrics of a run that diverged), nested too deeply for Python's parser, or an integer
    too long to convert."""
    try:
        return json.loads(text, parse_constant=_refuse)
    except json.JSONDecodeError as error:
        raise ValueError(error.msg) from None
    except _NotJson:
        raise
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        raise ValueError("an integer too long to convert") from None


def read_json(path: str | os.PathLike):
    """The JSON value in the file `path`; a file that is not UTF-8 JSON is a UserError naming it."""
    try:
        return parse_json(Path(path).read_text(encoding="utf-8"))
    except ValueError as error:  # UnicodeDecodeError too
        raise UserError(f"{path} is not valid JSON: {error}") from None


@contextmanager
def removed_on_failure(folder: Path, worth_keeping: Callable[[Path], bool] = lambda folder: False):
    """While the block runs it may create and fill `folder`. If the block fails (an error, Ctrl-C)
    and `folder` was absent or empty before, it is made so again, with any parent folders created
    for it, unless `worth_keeping(folder)`: something a later command continues from. So a failed
    command leaves nothing behind, and the corrected command is not refused as "not empty"."""
    folder = Path(folder)
    created = next((path for path in reversed([folder, *folder.parents]) if not path.exists()), None)
    was_empty = created is not None or (folder.is_dir() and not any(folder.iterdir()))
    try:
        yield
    except BaseException:
        if was_empty and not (folder.is_dir() and worth_keeping(folder)):
            with suppress(OSError):  # the failure, not the clean-up, is what the user must see
                for path in [created] if created is not None else folder.iterdir():
                    _remove(path)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
