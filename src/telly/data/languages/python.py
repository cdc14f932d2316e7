"""The Python plug-in: Python's own `ast` and `tokenize`, through the modules written for them.

Extraction is `telly.data.python_corpus`, rewrites `telly.data.rewrite`, and the probed properties
`telly.data.python_properties`; this module only gathers them behind the `Language` interface and
adds what the generation and completion builders need.
"""

from __future__ import annotations

import ast
import copy
import random
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from telly.data import python_corpus, python_properties, rewrite
from telly.data.language import CodeFunction, Rewrite

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


class PythonLanguage:
    name = "python"
    display_name = "Python"
    suffixes = (".py",)
    rewrite_kinds = rewrite.REWRITE_KINDS

    def default_sources(self) -> list[Path]:
        """The running interpreter's standard library directory."""
        return [Path(sysconfig.get_paths()["stdlib"])]

    def extract_functions(
        self, source: str, path: str, require_docstring: bool = True, min_statements: int = 0
    ) -> list[CodeFunction]:
        return python_corpus.extract_functions(source, path, require_docstring, min_statements)

    def lexical_types(self, code: str) -> list[tuple[str, str]]:
        return python_properties.lexical_types(code)

    def sbt(self, code: str) -> list[str]:
        return python_properties.sbt(code)

    def cyclomatic_complexity(self, code: str) -> int:
        return python_properties.cyclomatic_complexity(code)

    def rewrite(
        self, code: str, rng: random.Random, function_names: Sequence[str] = ()
    ) -> Rewrite | None:
        return rewrite.rewrite_function(code, rng, function_names=function_names)

    def generation_example(self, function: CodeFunction) -> tuple[str, str] | str:
        """The def line normalised to one line, and the body `ast.unparse`d."""
        node = ast.parse(function.code).body[0]
        if _is_empty(node.body):
            return "empty body"
        try:
            return _signature(node), ast.unparse(ast.Module(body=node.body, type_ignores=[]))
        except RecursionError:
            return "too deep to unparse"

    def completion_lines(self, function: CodeFunction) -> list[str] | str:
        """The non-blank lines of the `ast.unparse`d function, indentation kept."""
        node = ast.parse(function.code).body[0]
        if _is_empty(node.body):
            return "empty body"
        try:
            return [line for line in ast.unparse(node).split("\n") if line.strip()]
        except RecursionError:
            return "too deep to unparse"


def _is_empty(body: list[ast.stmt]) -> bool:
    """A body of only `pass` or `...`: nothing to generate or complete."""
    return all(
        isinstance(statement, ast.Pass)
        or (isinstance(statement, ast.Expr) and getattr(statement.value, "value", None) is ...)
        for statement in body
    )


def _signature(node: _FunctionNode) -> str:
    """The def line, normalised to one line: `def total(items, start=0) -> int:`."""
    header = copy.copy(node)
    header.decorator_list, header.body, header.type_comment = [], [ast.Pass()], None
    return ast.unparse(header).split("\n", 1)[0]


PYTHON = PythonLanguage()
