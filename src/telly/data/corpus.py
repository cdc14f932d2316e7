"""Corpora of functions read from real source trees, split by file, and the code search builder.

`read_split_corpus` walks source folders, single files and `.zip` archives (the JDK ships its
class library's sources as `lib/src.zip`), lets the language plug-in (`telly.data.languages`)
extract the functions of every file (in worker processes, `telly.data.parallel`), drops
duplicates and deals whole files to train, valid and test; the builders of every task start from
it. `build_code_search` writes one CodeSearchNet record per documented function. The default
source of each language is on the machine (Python's own standard library), so the corpora can be
built offline.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import sys
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from telly.data.formats import write_jsonl
from telly.data.languages import LANGUAGES, Language
from telly.data.language import CodeFunction
from telly.data.parallel import ordered_map
from telly.errors import UserError
from telly.files import atomic_path, remove_temporaries, removed_on_failure

# Directories never walked. Test code seldom has docs, and the standard libraries' test
# directories hold deliberately broken or odd files; site-packages is third-party code.
SKIPPED_DIR_NAMES = frozenset({"__pycache__", "site-packages", "test", "tests", "idle_test"})

# Source files larger than this are skipped and counted (--max-file-mb raises it): generated tables
# rather than code a person wrote. The largest file of Python's, the JDK's and Ruby's own sources
# is under 1 MB.
MAX_FILE_MB = 10.0

# Source files a worker process reads at a time (`--jobs`): few enough that the work is shared
# evenly, enough that sending them costs little.
FILES_PER_CHUNK = 8

SPLITS = ("train", "valid", "test")
# A split with more than this many times its share of the functions, or less than its share divided
# by it, is unbalanced. Every split of a large source tree is far closer to its share.
BALANCE_FACTOR = 2


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
    """Functions read from source files of one language, every file's functions in one split."""

    language: Language
    # split -> [(repo, one file's functions)], files in source order
    files: dict[str, list[tuple[str, list[CodeFunction]]]]
    summary: BuildSummary

    def functions(self, split: str) -> list[CodeFunction]:
        """The split's functions in file order."""
        return [function for _, functions in self.files[split] for function in functions]


def language_named(name: str) -> Language:
    """The plug-in of a language given by name (a user mistake if there is none)."""
    if name not in LANGUAGES:
        raise UserError(f"unknown language {name!r}; choose one of: {', '.join(LANGUAGES)}")
    return LANGUAGES[name]


def detect_language(sources: list[Path]) -> str | None:
    """The one language whose files the sources hold (by file name ending); None if none's."""
    every_suffix = tuple(suffix for language in LANGUAGES.values() for suffix in language.suffixes)
    paths = [file.path for file in source_files(sources, every_suffix)]  # one walk for all languages
    found = [name for name, language in LANGUAGES.items() if any(path.endswith(language.suffixes) for path in paths)]
    if len(found) > 1:
        where = ", ".join(map(str, sources))
        raise UserError(f"{where} hold files of several languages ({', '.join(found)}); choose one with --language")
    return found[0] if found else None


def build_code_search(
    sources: list[Path],
    out_dir: Path,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    language: str = "python",
    overwrite: bool = False,
    max_file_mb: float = MAX_FILE_MB,
    jobs: int | None = None,
) -> BuildSummary:
    """Write `train.jsonl`, `valid.jsonl` and `test.jsonl` (CodeSearchNet format) into `out_dir`.

    One record per documented function, split by file as `read_split_corpus` describes (with
    `jobs` worker processes). The same inputs and seed give byte-identical files, whatever `jobs`.
    `out_dir` is written as `new_data_folder` says.
    """
    with new_data_folder(out_dir, sources, overwrite) as folder:
        corpus = read_split_corpus(sources, seed, valid_fraction, test_fraction, language=language,
                                   max_file_mb=max_file_mb, jobs=jobs)
        for split in SPLITS:
            records = [
                function.to_codesearchnet(repo, partition=split)
                for repo, functions in corpus.files[split]
                for function in functions
            ]
            write_jsonl(folder / f"{split}.jsonl", records)
    return corpus.summary


@contextmanager
def new_data_folder(out_dir: str | os.PathLike, sources: list[Path], overwrite: bool) -> Iterator[Path]:
    """A folder for a builder to write a whole data set into, which replaces `out_dir` when the
    block ends cleanly (see `atomic_path`): a reader, or a build killed half-way, never finds the
    splits of two builds side by side. As a run folder, `out_dir` must be absent or empty unless `overwrite`;
    it may never hold one of the `sources`, which replacing it would delete."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output path is a file, not a directory: {out_dir}")
    for source in map(Path, sources):
        if out_dir.resolve() in (source.resolve(), *source.resolve().parents):
            raise UserError(f"--out {out_dir} holds the source {source}; choose another folder for the data")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"data folder {out_dir} is not empty; pass --overwrite to replace it, or choose another --out")
    remove_temporaries(out_dir.parent, of=out_dir.name)  # of builds killed before
    with removed_on_failure(out_dir), atomic_path(out_dir) as folder:  # a failed build leaves no parent folders
        folder.mkdir()
        yield folder


def read_split_corpus(
    sources: list[Path],
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    require_docstring: bool = True,
    min_statements: int = 0,
    language: str = "python",
    max_file_mb: float = MAX_FILE_MB,
    jobs: int | None = None,
) -> SplitCorpus:
    """The functions of every source file of `language` under `sources`, split by file.

    Walks every file with one of the language's name endings under each source (a directory, a
    single file, or a `.zip` archive read in place) in sorted order, skipping the directories in
    SKIPPED_DIR_NAMES; files that are not regular files (a FIFO, a link to a device), are larger
    than `max_file_mb`, cannot be read as UTF-8 or do not parse are skipped and counted.
    `require_docstring` and `min_statements` choose the functions as in
    `telly.data.python_corpus.extract_functions`. Exact duplicates (same `code`) are dropped, the
    first one in file order kept. Whole files go to one split: the files are shuffled with `seed`
    and dealt to test, valid and train so that about `test_fraction` and `valid_fraction` of the
    functions land in test and valid (see `_assign_splits`). Every split with a share (train, and
    valid and test unless their fraction is 0) gets at least one file; fewer files than such
    splits is a user mistake. `jobs` worker processes read the files (None: one per available
    core; 1: this process), with the same result.
    """
    if not (0 <= valid_fraction and 0 <= test_fraction and valid_fraction + test_fraction < 1):
        raise UserError(
            f"valid and test fractions must be >= 0 and sum to less than 1, "
            f"got {valid_fraction} and {test_fraction}"
        )
    if not max_file_mb > 0:
        raise UserError(f"--max-file-mb must be > 0, got {max_file_mb}")
    plugin = language_named(language)
    files = source_files([Path(source) for source in sources], plugin.suffixes)
    reader = FileReader(plugin.name, require_docstring, min_statements, max_file_mb)
    functions_by_file, skipped, duplicates = _read_unique_functions(files, reader, plugin.display_name, jobs)
    sources_text = ", ".join(map(str, sources))
    wanted = _wanted_functions(require_docstring, min_statements)
    if not functions_by_file:
        raise UserError(f"no {wanted} found in {sources_text}")
    shares = _shares(valid_fraction, test_fraction)
    if len(functions_by_file) < len(shares):
        raise UserError(
            f"a split by file needs at least {len(shares)} files with {wanted}, one for each of "
            f"{', '.join(shares)}; {sources_text} hold {len(functions_by_file)}"
        )

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
    return SplitCorpus(plugin, files_by_split, summary)


@dataclass(frozen=True)
class SourceFile:
    repo: str  # the name of the source folder or archive
    path: str  # relative to it, with "/" separators
    location: Path  # the file, or the archive that holds it
    member: int | None = None  # the file's index among the archive's members

    @property
    def where(self) -> str:
        """Where a person finds it: the file's path, or the archive's path + "/" + the member's name."""
        return str(self.location) if self.member is None else f"{self.location}/{self.path}"


def _read_unique_functions(
    files: list[SourceFile], reader: FileReader, language_name: str, jobs: int | None
) -> tuple[list[tuple[str, list[CodeFunction]]], dict[str, int], int]:
    """Read every file; return `[(repo, functions)]` per file that gave any, skips, duplicates.

    A function whose code was already seen in an earlier file (or earlier in the same file) is a
    duplicate and dropped. Worker processes read the files (`ordered_map`); duplicates are
    dropped here, in file order.
    """
    skipped: Counter[str] = Counter()
    seen_code: set[str] = set()
    duplicates = 0
    functions_by_file = []
    with _archives_closed_after(), closing(ordered_map(reader, files, jobs, FILES_PER_CHUNK)) as read:
        progress = tqdm(read, desc=f"reading {language_name} files", total=len(files), unit="file", disable=None,
                        file=sys.stderr)
        for source_file, (functions, skip_reason) in zip(files, progress):
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
                functions_by_file.append((source_file.repo, unique))
    return functions_by_file, dict(skipped), duplicates


def source_files(sources: list[Path], suffixes: tuple[str, ...]) -> list[SourceFile]:
    """Every source file with one of `suffixes` to read, in a deterministic order."""
    files = []
    for source in sources:
        if source.is_file() and source.suffix == ".zip":
            files.extend(_files_in_archive(source, suffixes))
        elif source.is_dir():
            files.extend(
                SourceFile(source.name, path.relative_to(source).as_posix(), path)
                for path in _files_under(source, suffixes)
            )
        elif source.exists():  # a file, or something else given by name: read it if it is a regular file
            if source.name.endswith(suffixes):
                files.append(SourceFile(source.parent.name, source.name, source))
        else:
            raise UserError(f"no such file or directory: {source}")
    return files


def _files_under(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files under `root` with one of `suffixes`, outside skipped directories, by path. The
    walk keeps its own list of folders to visit instead of recursing (a tree thousands of folders
    deep is read like any other), and does not follow links to folders; a folder it cannot list
    (no permission, a path too long for the system) is passed over, as os.walk does."""
    found, folders = [], [root]
    while folders:
        try:
            with os.scandir(folders.pop()) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIPPED_DIR_NAMES:
                    folders.append(entry.path)
            elif entry.name.endswith(suffixes):
                found.append(Path(entry.path))
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _files_in_archive(archive_path: Path, suffixes: tuple[str, ...]) -> list[SourceFile]:
    """The archive's members with one of `suffixes`, outside skipped directories, by name."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = list(enumerate(archive.infolist()))
    except zipfile.BadZipFile:
        raise UserError(f"not a readable zip archive: {archive_path}") from None
    chosen = sorted(
        ((index, member) for index, member in members
         if member.filename.endswith(suffixes) and not SKIPPED_DIR_NAMES.intersection(member.filename.split("/")[:-1])),
        key=lambda indexed: indexed[1].filename,
    )
    return [SourceFile(archive_path.stem, member.filename, archive_path, index) for index, member in chosen]


class _Skipped(Exception):
    """A source file that is not read; the message says why."""


@dataclass(frozen=True)
class FileReader:
    """Reads the functions of one source file, in this process or in a worker (it is picklable:
    the language goes by name)."""

    language: str
    require_docstring: bool
    min_statements: int
    max_file_mb: float

    def __call__(self, source_file: SourceFile) -> tuple[list[CodeFunction], str | None]:
        """The functions the language plug-in finds in the file, or the reason the file was skipped."""
        try:
            source = self._read_bytes(source_file).decode("utf-8-sig")
        except _Skipped as skipped:
            return [], str(skipped)
        except (OSError, zipfile.BadZipFile):
            return [], "unreadable"
        except UnicodeDecodeError:
            return [], "not UTF-8"
        # Checked up front: Python versions disagree on which exception a NUL byte raises.
        if "\0" in source:
            return [], "with NUL bytes"
        try:
            return LANGUAGES[self.language].extract_functions(
                source, source_file.path, self.require_docstring, self.min_statements
            ), None
        except SyntaxError:  # includes IndentationError
            return [], "unparsable"
        except (RecursionError, MemoryError):
            return [], "too deep to parse"

    def digest(self, source_file: SourceFile) -> str | None:
        """sha256 of the file's bytes; None for a file that is not read (as `__call__` skips it)."""
        try:
            return hashlib.sha256(self._read_bytes(source_file)).hexdigest()
        except (_Skipped, OSError, zipfile.BadZipFile):
            return None

    def _read_bytes(self, source_file: SourceFile) -> bytes:
        if source_file.member is None:
            return _read_file(source_file.location, self.max_file_mb)
        return _read_member(_open_archive(source_file.location), source_file.member, self.max_file_mb)


# The archives this process has open while it reads them (the JDK's src.zip takes 0.1 s to open).
# A worker process starts with none (`ordered_map` starts fresh ones), so none shares an open file.
_open_archives: dict[Path, zipfile.ZipFile] = {}


def _open_archive(path: Path) -> zipfile.ZipFile:
    if path not in _open_archives:
        _open_archives[path] = zipfile.ZipFile(path)
    return _open_archives[path]


@contextmanager
def _archives_closed_after() -> Iterator[None]:
    """Closes the archives this process opened to read in the block (a worker's close when it ends)."""
    try:
        yield
    finally:
        for archive in _open_archives.values():
            archive.close()
        _open_archives.clear()


def _read_file(path: Path, max_file_mb: float) -> bytes:
    """The bytes of a regular file (or of one a link points to) of at most `max_file_mb`."""
    # O_NONBLOCK: opening a FIFO does not wait for a writer; it changes nothing for a regular file.
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise _Skipped("not a regular file")  # a FIFO, a device such as /dev/zero, a folder
        return _at_most(stream, max_file_mb)


def _read_member(archive: zipfile.ZipFile, index: int, max_file_mb: float) -> bytes:
    member = archive.infolist()[index]
    if member.is_dir():
        raise _Skipped("not a regular file")
    with archive.open(member) as stream:
        return _at_most(stream, max_file_mb)


def _at_most(stream, max_file_mb: float) -> bytes:
    limit = int(max_file_mb * 2**20)
    data = stream.read(limit + 1)  # never more, whatever the file claims its size is
    if len(data) > limit:
        raise _Skipped(f"larger than {max_file_mb:g} MB")
    return data


def _wanted_functions(require_docstring: bool, min_statements: int) -> str:
    """"documented functions of at least 3 statements": what the builder reads, for messages."""
    wanted = "documented functions" if require_docstring else "functions"
    if min_statements:
        wanted += f" of at least {min_statements} statements"
    return wanted


def _shares(valid_fraction: float, test_fraction: float) -> dict[str, float]:
    """The fraction of the functions each split gets, for the splits that get any (train always)."""
    fractions = {"train": 1 - valid_fraction - test_fraction, "valid": valid_fraction, "test": test_fraction}
    return {split: fraction for split, fraction in fractions.items() if fraction > 0}


def _assign_splits(
    function_counts: list[int], seed: int, valid_fraction: float, test_fraction: float
) -> list[str]:
    """The split of each file, so that about the given fractions of functions go to test/valid.

    Files are shuffled and laid end to end; a file goes to test if its midpoint falls in the first
    `test_fraction` of all functions, to valid if in the next `valid_fraction`, else to train.
    Using the midpoint keeps a single big file from overshooting a small split. With few files
    this can still leave a split empty or unbalanced (one big file's midpoint skips past a small
    split, or lands in it); then the files are dealt by `_deal_by_size` instead.
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
    targets = {split: share * total for split, share in _shares(valid_fraction, test_fraction).items()}
    functions: Counter[str] = Counter()
    for split, count in zip(splits, function_counts):
        functions[split] += count
    if all(target / BALANCE_FACTOR <= functions[split] <= target * BALANCE_FACTOR
           for split, target in targets.items()):
        return splits
    return _deal_by_size(function_counts, order, targets)


def _deal_by_size(function_counts: list[int], order: list[int], targets: dict[str, float]) -> list[str]:
    """The split of each file: biggest file first, each to the split furthest below its target
    number of functions, except that the last files go to the splits still without one.

    `order` breaks ties between files of equal size. Needs at least as many files as targets.
    """
    splits = [""] * len(function_counts)
    files = dict.fromkeys(targets, 0)
    functions = dict.fromkeys(targets, 0)
    biggest_first = sorted(order, key=lambda index: function_counts[index], reverse=True)  # stable
    for files_left, index in zip(range(len(order), 0, -1), biggest_first):
        without_file = [split for split in targets if not files[split]]
        choices = without_file if len(without_file) == files_left else list(targets)
        split = max(choices, key=lambda name: targets[name] - functions[name])
        splits[index] = split
        files[split] += 1
        functions[split] += function_counts[index]
    return splits
