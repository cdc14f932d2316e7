"""A BigCloneBench-format clone detection data set built from real functions.

Every function with at least MIN_STATEMENTS statements (documented or not; a doc comment is cut
out) is paired twice, always as (original, rewritten function):
- label 1 with its own rewrite by the language plug-in (renamed locals, changed layout, the name of
  another function of the split; for Python (`telly.data.rewrite`) also some of for->while,
  reordered independent assignments, swapped if/else, `x += 1` <-> `x = x + 1`);
- label 0 with the rewrite of another function of the same split and similar length (token count
  within LENGTH_TOLERANCE, drawn from the NEGATIVE_CHOICES nearest lengths) that is not the same
  code up to names, layout and comments.
Both sides of every pair thus look alike (one original, one rewrite, different function names),
so a model cannot tell the label from style or names. Each split has as many negatives as
positives; whole source files go to one split, so negatives are paired within it.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from telly.data.corpus import MAX_FILE_MB, SPLITS, TaskDataSummary, new_data_folder, read_split_corpus
from telly.data.formats import write_bigclonebench
from telly.data.language import CodeFunction, Rewrite
from telly.data.languages import LANGUAGES
from telly.data.parallel import ordered_map

MIN_STATEMENTS = 3
LENGTH_TOLERANCE = 0.2
NEGATIVE_CHOICES = 5
# Functions a worker process rewrites at a time (`jobs`).
FUNCTIONS_PER_CHUNK = 32


@dataclass
class CloneBuildSummary(TaskDataSummary):
    rewrites: dict[str, int]  # functions changed by each kind of rewrite
    rewrite_kinds: tuple[str, ...]  # every kind the language's rewrites have

    def __str__(self) -> str:
        applied = ", ".join(f"{self.rewrites.get(kind, 0):,} {kind}" for kind in self.rewrite_kinds)
        return f"{super().__str__()}; rewrites: {applied}"


@dataclass(frozen=True)
class _Clone:
    idx: str  # the original's; its rewrite's is _rewrite_idx(idx)
    function: CodeFunction
    rewrite: Rewrite
    length: int  # tokens of the original


def build_clones(
    sources: list[Path],
    out_dir: Path,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    language: str = "python",
    overwrite: bool = False,
    max_file_mb: float = MAX_FILE_MB,
    jobs: int | None = None,
) -> CloneBuildSummary:
    """Write `data.jsonl`, `train.txt`, `valid.txt` and `test.txt` (BigCloneBench format).

    `data.jsonl` holds every kept function and its rewrite once, idx "0", "1", ... in file order
    (an original, then its rewrite); the pair lines of each split are in a seeded random order.
    Same inputs and seed give byte-identical files, whatever the number of worker processes
    (`jobs`, as `read_split_corpus` says) that read the files and rewrite the functions. `out_dir`
    is written as `new_data_folder` says.
    """
    with new_data_folder(out_dir, sources, overwrite) as folder:
        corpus = read_split_corpus(
            sources,
            seed,
            valid_fraction,
            test_fraction,
            require_docstring=False,
            min_statements=MIN_STATEMENTS,
            language=language,
            max_file_mb=max_file_mb,
            jobs=jobs,
        )
        left_out: Counter[str] = Counter()
        rewrites: Counter[str] = Counter()
        functions: dict[str, str] = {}
        pairs_by_split = {}
        functions_by_split = {split: corpus.functions(split) for split in SPLITS}
        rewrites_by_split = _rewrites(corpus.language.name, functions_by_split, seed, jobs)
        for split in SPLITS:
            clones = list(_clones(functions_by_split[split], rewrites_by_split[split], functions, left_out))
            rewrites.update(kind for clone in clones for kind in clone.rewrite.applied)
            pairs_by_split[split] = _pairs(clones, random.Random(f"{seed}:{split}"), left_out)
        write_bigclonebench(folder, functions, pairs_by_split)
    return CloneBuildSummary(
        corpus=corpus.summary,
        record_kind="pairs",
        split_records={split: len(pairs) for split, pairs in pairs_by_split.items()},
        left_out=dict(left_out),
        rewrites=dict(rewrites),
        rewrite_kinds=corpus.language.rewrite_kinds,
    )


def _rewrites(
    language: str, functions_by_split: dict[str, list[CodeFunction]], seed: int, jobs: int | None
) -> dict[str, list[Rewrite | None]]:
    """The rewrite of every function (None where there is none), made by `jobs` worker processes.

    A rewrite takes the name of another function of its split, so names tell nothing.
    """
    names = {split: [function.name for function in functions] for split, functions in functions_by_split.items()}
    codes = [(split, function.code) for split, functions in functions_by_split.items() for function in functions]
    rewrites = list(ordered_map(functools.partial(_rewrite, language, seed, names), codes, jobs, FUNCTIONS_PER_CHUNK))
    by_split, start = {}, 0
    for split, functions in functions_by_split.items():
        by_split[split], start = rewrites[start : start + len(functions)], start + len(functions)
    return by_split


def _rewrite(language: str, seed: int, names: dict[str, list[str]], split_and_code: tuple[str, str]) -> Rewrite | None:
    """The language's rewrite of a function's code, named like a function of its split. Seeded by
    the code too, so that it does not depend on the files around it (nor on the process)."""
    split, code = split_and_code
    return LANGUAGES[language].rewrite(code, random.Random(f"{seed}:{code}"), function_names=names[split])


def _clones(
    functions: list[CodeFunction], rewrites: list[Rewrite | None], data: dict[str, str], left_out: Counter[str]
) -> Iterator[_Clone]:
    """Each function with its rewrite, both added to `data` under fresh idx values."""
    for function, rewrite in zip(functions, rewrites):
        if rewrite is None:
            left_out["rewrite does not parse"] += 1
        elif rewrite.code == function.code:
            left_out["rewrite unchanged"] += 1
        else:
            idx = str(len(data))
            data[idx] = function.code
            data[_rewrite_idx(idx)] = rewrite.code
            yield _Clone(idx, function, rewrite, len(function.code_tokens))


def _rewrite_idx(original_idx: str) -> str:
    return str(int(original_idx) + 1)


def _pairs(
    clones: list[_Clone], rng: random.Random, left_out: Counter[str]
) -> list[tuple[str, str, int]]:
    """One positive and one hard negative pair per clone that has a partner, shuffled."""
    by_length = sorted(clones, key=lambda clone: clone.length)
    pairs = []
    for position, clone in enumerate(by_length):
        partners = _different_partners(clone, _nearest_lengths(by_length, position))
        if not partners:
            left_out["no partner of similar length"] += 1
            continue
        partner = rng.choice(partners)
        pairs.append((clone.idx, _rewrite_idx(clone.idx), 1))
        pairs.append((clone.idx, _rewrite_idx(partner.idx), 0))
    rng.shuffle(pairs)
    return pairs


def _nearest_lengths(by_length: list[_Clone], position: int) -> Iterator[_Clone]:
    """The other clones within LENGTH_TOLERANCE of the one at `position`, nearest length first."""
    length = by_length[position].length
    low, high = position - 1, position + 1
    while True:
        below = length - by_length[low].length if low >= 0 else None
        above = by_length[high].length - length if high < len(by_length) else None
        if below is None and above is None:
            return
        if above is None or (below is not None and below <= above):
            nearest, distance, low = by_length[low], below, low - 1
        else:
            nearest, distance, high = by_length[high], above, high + 1
        if distance > LENGTH_TOLERANCE * length:
            return
        yield nearest


def _different_partners(clone: _Clone, candidates: Iterator[_Clone]) -> list[_Clone]:
    """Up to NEGATIVE_CHOICES candidates that are not the same code up to names and layout,
    and whose rewrite is not named like the clone (positives never are)."""
    partners = []
    for candidate in candidates:
        if (
            candidate.rewrite.original_canonical_form != clone.rewrite.original_canonical_form
            and candidate.rewrite.name != clone.function.name
        ):
            partners.append(candidate)
            if len(partners) == NEGATIVE_CHOICES:
                break
    return partners
