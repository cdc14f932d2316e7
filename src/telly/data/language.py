"""What every language plug-in provides, and the records every language shares: the functions
they extract (`CodeFunction`), the clones they make (`Rewrite`), the token types (`LEXICAL_TYPES`).

The builders (`telly.data.corpus`, `clones`, `generation`) and the probe study call only this
interface, so they never branch on the language. Python implements it with its own `ast` and
`tokenize` (`telly.data.languages.python`); Java and Ruby share one tree-sitter implementation
(`telly.data.languages.tree_sitter`) set up by a small per-language spec.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# A doc whose summary has fewer words is not a usable query ("Return x.").
MIN_DOCSTRING_WORDS = 3

# The types `Language.lexical_types` gives code tokens (the lexical probe's classes).
LEXICAL_TYPES = ("KEYWORD", "NAME", "NUMBER", "STRING", "OPERATOR")

_WORD_OR_PUNCTUATION = re.compile(r"[\w]+|[^\s\w]")


def summary_tokens(summary: str) -> tuple[str, ...]:
    """The words and single punctuation marks of a doc summary (CodeSearchNet's docstring_tokens)."""
    return tuple(_WORD_OR_PUNCTUATION.findall(summary))


@dataclass(frozen=True)
class CodeFunction:
    """One function or method, ready to become a CodeSearchNet record."""

    language: str  # a key of LANGUAGES
    path: str  # relative to the source root, with "/" separators
    func_name: str  # qualified: "Class.method", "outer.inner"
    code: str  # source without the doc comment, dedented
    original_string: str  # source with the doc comment, dedented
    docstring: str  # the whole doc comment, cleaned of its markup ("" if undocumented)
    summary: str  # the doc's first paragraph (Python, Ruby) or sentence (Javadoc), one line
    code_tokens: tuple[str, ...]
    docstring_tokens: tuple[str, ...]  # of `summary`
    line: int = 0  # where the definition starts in its file (1-based, decorators included); 0: unknown

    @property
    def name(self) -> str:
        """The name in the definition: `func_name` without its class or outer function."""
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
            "language": self.language,
            "code": self.code,
            "code_tokens": list(self.code_tokens),
            "docstring": self.docstring,
            "docstring_tokens": list(self.docstring_tokens),
            "url": "",
            "partition": partition,
        }


@dataclass(frozen=True)
class Rewrite:
    """A clone of a function and the rewrites that changed it (names from the language's
    `rewrite_kinds`)."""

    code: str
    name: str  # the rewritten function's
    applied: tuple[str, ...]
    original_canonical_form: str  # the original's; equal for code differing only in names, layout, comments


class Language(Protocol):
    """A programming language the builders and probes can read.

    Functions taking `code` expect the `code` of one `CodeFunction` of this language (or a rewrite
    of it). Methods that cannot handle a piece of code raise ValueError or SyntaxError.
    """

    name: str  # the key in LANGUAGES and the CodeSearchNet `language` field
    display_name: str  # "Python", for messages
    suffixes: tuple[str, ...]  # source file name endings: (".py",)
    rewrite_kinds: tuple[str, ...]  # what `rewrite` may report in `Rewrite.applied`

    def default_sources(self) -> list[Path]:
        """Where this language's sources are read from when the user names none."""

    def extract_functions(
        self, source: str, path: str, require_docstring: bool = True, min_statements: int = 0
    ) -> list[CodeFunction]:
        """The functions of one source file (see `telly.data.python_corpus.extract_functions`)."""

    def lexical_types(self, code: str) -> list[tuple[str, str]]:
        """`(token, type)` for each code token, the type one of LEXICAL_TYPES."""

    def sbt(self, code: str) -> list[str]:
        """The structure-based traversal of the function's syntax tree."""

    def cyclomatic_complexity(self, code: str) -> int:
        """1 + the function's decision points."""

    def rewrite(
        self, code: str, rng: random.Random, function_names: Sequence[str] = ()
    ) -> Rewrite | None:
        """A semantics-preserving clone, or None when no valid one can be made."""

    def generation_example(self, function: CodeFunction) -> tuple[str, str] | str:
        """`(signature, body)` for a CONCODE-style record, or why the function gives none."""

    def completion_lines(self, function: CodeFunction) -> list[str] | str:
        """The function's lines as line-level completion writes them, or why it gives none."""
