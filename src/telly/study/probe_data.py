"""The functions the probes study: real code from the corpus builder, with every property's label.

Functions of any language come from `read_split_corpus` (documented or not), so probe-train and
probe-test functions never share a source file. Each kept function carries its lexical token
types, its SBT, its cyclomatic complexity and REWRITES semantics-preserving rewrites (the invariance
probe's group: the same function renamed and laid out anew; POJ-104's groups, for the semantic
probe, are programs of different authors, read by `telly.data.poj104`). A
function is kept when it tokenizes, has at most `max_tokens` code tokens (so the model sees all of
it; the structural and syntactic labels describe the whole function) and its rewrites are all
distinct.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from telly.data.corpus import MAX_FILE_MB, read_split_corpus
from telly.data.language import CodeFunction, Language
from telly.errors import UserError
from telly.study.properties import complexity_class

REWRITES = 2
TEST_FRACTION = 0.2
DEFAULT_MAX_TOKENS = 120  # code tokens; ~2 sub-words each stays within a 256 sub-word window


@dataclass(frozen=True)
class ProbeFunction:
    code: str
    typed_tokens: tuple[tuple[str, str], ...]  # (token text, lexical type), from `lexical_types`
    sbt: tuple[str, ...]
    complexity_class: int  # 1..6
    rewrites: tuple[str, ...]  # REWRITES distinct rewrites, none equal to `code`


@dataclass
class ProbeSet:
    train: list[ProbeFunction]
    test: list[ProbeFunction]
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> functions not kept
    language: str = "python"  # a key of LANGUAGES

    def split(self, name: str) -> list[ProbeFunction]:
        return {"train": self.train, "test": self.test}[name]


def build_probe_set(
    sources: list[Path],
    functions: int,
    seed: int = 0,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    language: str = "python",
    max_file_mb: float = MAX_FILE_MB,
) -> ProbeSet:
    """About `functions` functions, TEST_FRACTION of them from the corpus's test files.

    Deterministic for the same sources, `functions`, `seed` and `max_tokens`.
    """
    if functions < 10:
        raise UserError(f"--functions must be at least 10, got {functions}")
    corpus = read_split_corpus(sources, seed, valid_fraction=0.0, test_fraction=TEST_FRACTION,
                               require_docstring=False, min_statements=1, language=language, max_file_mb=max_file_mb)
    left_out: Counter[str] = Counter()
    wanted_test = max(2, round(functions * TEST_FRACTION))
    wanted = {"train": functions - wanted_test, "test": wanted_test}
    chosen = {}
    for split, count in wanted.items():
        candidates = corpus.functions(split)
        random.Random(f"{seed}:{split}").shuffle(candidates)
        chosen[split] = []
        labelled = tqdm(total=count, desc=f"labelling {split} functions", unit="function", leave=False, disable=None)
        with labelled as progress:
            for function in candidates:
                if len(chosen[split]) == count:
                    break
                probe_function = _probe_function(corpus.language, function, seed, max_tokens, left_out)
                if probe_function is not None:
                    chosen[split].append(probe_function)
                    progress.update()
        if len(chosen[split]) < 2:
            raise UserError(f"only {len(chosen[split])} usable functions in the {split} files of the sources")
    return ProbeSet(chosen["train"], chosen["test"], dict(left_out), language)


def _probe_function(
    language: Language, function: CodeFunction, seed: int, max_tokens: int, left_out: Counter[str]
) -> ProbeFunction | None:
    if len(function.code_tokens) > max_tokens:
        left_out[f"more than {max_tokens} tokens"] += 1
        return None
    try:
        typed_tokens = language.lexical_types(function.code)
        function_sbt = language.sbt(function.code)
        complexity = language.cyclomatic_complexity(function.code)
    except (ValueError, SyntaxError):
        left_out["does not tokenize"] += 1
        return None
    except RecursionError:  # parses, but nested too deeply to walk recursively
        left_out["nested too deeply"] += 1
        return None
    rewrites = []
    for attempt in range(3 * REWRITES):  # a few tries: two draws can give the same rewrite
        rewrite = language.rewrite(function.code, random.Random(f"{seed}:{attempt}:{function.code}"))
        if rewrite is not None and rewrite.code not in (function.code, *rewrites):
            rewrites.append(rewrite.code)
        if len(rewrites) == REWRITES:
            break
    else:
        left_out[f"fewer than {REWRITES} distinct rewrites"] += 1
        return None
    return ProbeFunction(
        code=function.code,
        typed_tokens=tuple(typed_tokens),
        sbt=tuple(function_sbt),
        complexity_class=complexity_class(complexity),
        rewrites=tuple(rewrites),
    )
