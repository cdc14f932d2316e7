"""`TreeSitterLanguage`: the `Language` interface for a tree-sitter grammar, one part per job.

It only hands each call to the part that does the job: `FunctionReader` (extraction, and the
generation and completion views of a function), `CodeProperties` (what the probes predict) and
`CloneRewriter` (clones); all three read trees through one `Trees` of the language's spec.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from telly.data.language import CodeFunction, Rewrite
from telly.data.languages.tree_sitter.extract import FunctionReader
from telly.data.languages.tree_sitter.properties import CodeProperties
from telly.data.languages.tree_sitter.rewrite import REWRITE_KINDS, CloneRewriter
from telly.data.languages.tree_sitter.spec import Trees, TreeSitterSpec


class TreeSitterLanguage:
    rewrite_kinds = REWRITE_KINDS

    def __init__(self, spec: TreeSitterSpec):
        self.spec = spec
        self.name = spec.name
        self.display_name = spec.display_name
        self.suffixes = spec.suffixes
        trees = Trees(spec)
        self._reader = FunctionReader(trees)
        self._properties = CodeProperties(trees)
        self._rewriter = CloneRewriter(trees)

    def default_sources(self) -> list[Path]:
        return list(self.spec.default_sources)

    def extract_functions(
        self, source: str, path: str, require_docstring: bool = True, min_statements: int = 0
    ) -> list[CodeFunction]:
        return self._reader.extract_functions(source, path, require_docstring, min_statements)

    def generation_example(self, function: CodeFunction) -> tuple[str, str] | str:
        return self._reader.generation_example(function)

    def completion_lines(self, function: CodeFunction) -> list[str] | str:
        return self._reader.completion_lines(function)

    def lexical_types(self, code: str) -> list[tuple[str, str]]:
        return self._properties.lexical_types(code)

    def sbt(self, code: str) -> list[str]:
        return self._properties.sbt(code)

    def cyclomatic_complexity(self, code: str) -> int:
        return self._properties.cyclomatic_complexity(code)

    def rewrite(
        self, code: str, rng: random.Random, function_names: Sequence[str] = ()
    ) -> Rewrite | None:
        return self._rewriter.rewrite(code, rng, function_names)

    def canonical_form(self, code: str) -> str:
        return self._rewriter.canonical_form(code)
