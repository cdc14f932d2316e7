"""The code properties the probes predict, for Python: read with Python's own `tokenize` and `ast`.

The Python plug-in's (`telly.data.languages.python`); Java and Ruby compute the same three
properties from tree-sitter trees (`telly.data.languages.tree_sitter`). Shi et al. (ISSTA 2023)
probe four properties; three are computed here from one function's code:
- lexical: the type of every code token (`lexical_types`), one of `language.LEXICAL_TYPES`;
- syntactic: the structure-based traversal of the function's AST (`sbt`);
- structural: the function's cyclomatic complexity (`cyclomatic_complexity`).
"""

from __future__ import annotations

import ast
import io
import keyword
import sys
import tokenize

# The layout tokens `python_tokens` drops; shared so that both keep exactly the same tokens.
from telly.data.python_corpus import LAYOUT_TOKENS

# Python's token types (other than layout) and their lexical type. Python 3.12 splits an f-string
# into FSTRING_START, FSTRING_MIDDLE and FSTRING_END around its expressions' own tokens; every
# piece of string text is a STRING. (Before 3.12 a whole f-string is one STRING token.)
_LEXICAL_TYPE_OF_TOKEN = {
    tokenize.NAME: "NAME",
    tokenize.NUMBER: "NUMBER",
    tokenize.STRING: "STRING",
    tokenize.OP: "OPERATOR",
} | {
    getattr(tokenize, name): "STRING"
    for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END")
    if hasattr(tokenize, name)
}

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
_TRY_NODES = (ast.Try, ast.TryStar) if sys.version_info >= (3, 11) else (ast.Try,)


def lexical_types(code: str) -> list[tuple[str, str]]:
    """`(token text, lexical type)` for every token `python_tokens(code)` keeps, in order.

    A NAME that is a hard keyword (`keyword.iskeyword`: `def`, `if`, `True`, `None`, ...) is a
    KEYWORD. Soft keywords (`match`, `case`, `_`, `type`) stay NAME: they are keywords only in
    some positions and ordinary identifiers everywhere else. Raises ValueError on a token Python
    could not tokenize (an ERRORTOKEN: code that does not parse).
    """
    typed = []
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type in LAYOUT_TOKENS:
            continue
        if token.type not in _LEXICAL_TYPE_OF_TOKEN:
            raise ValueError(f"cannot classify token {token.string!r} at {token.start}")
        lexical_type = _LEXICAL_TYPE_OF_TOKEN[token.type]
        if lexical_type == "NAME" and keyword.iskeyword(token.string):
            lexical_type = "KEYWORD"
        typed.append((token.string, lexical_type))
    return typed


def sbt(code: str) -> list[str]:
    """The structure-based traversal (SBT) of the function's AST (Hu et al., ICPC 2018).

    SBT(node) = `(` label, SBT of each child in `ast.iter_child_nodes` order, `)` label. A label is
    the node's class name, except that identifiers and literals carry their value as in Hu et
    al.'s `SimpleName_x`: `Name_<id>`, `arg_<name>`, and `Constant_<Python type of the value>`
    (`Constant_int`, `Constant_str`: the value itself may be long text). The expression contexts
    Load/Store/Del are left out: they follow from the position of the node. Operators (Add, Eq,
    And, ...) are kept. Names held as plain strings rather than nodes (the function's own name,
    attribute and keyword-argument names) do not appear. `code` must hold exactly one function
    definition.
    """
    return _sbt(_single_function(code))


def _sbt(node: ast.AST) -> list[str]:
    label = _sbt_label(node)
    children = [
        child for child in ast.iter_child_nodes(node) if not isinstance(child, ast.expr_context)
    ]
    return ["(", label, *(token for child in children for token in _sbt(child)), ")", label]


def _sbt_label(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"Name_{node.id}"
    if isinstance(node, ast.arg):
        return f"arg_{node.arg}"
    if isinstance(node, ast.Constant):
        return f"Constant_{type(node.value).__name__}"
    return type(node).__name__


def cyclomatic_complexity(code: str) -> int:
    """McCabe's cyclomatic complexity of one function: 1 + its decision points.

    The decision points are radon's (`radon.complexity.ComplexityVisitor`, the definition behind
    radon and xenon), each found anywhere in the function's body:
    - `if` / `elif` and a conditional expression `a if c else b`: 1 each;
    - `for`, `async for`, `while`: 1, and 1 more with an `else` block;
    - `try`: 1 per `except` handler, and 1 more with an `else` block (`finally` adds nothing);
    - a boolean operator `a and b or c`: 1 per operand after the first of each `BoolOp`;
    - a comprehension: 1 per `for` clause and 1 per `if` clause;
    - `match`: 1 per case, less 1 if a case is a bare wildcard or capture (`case _:`);
    - `with`, `assert`, `return`, `raise`, `lambda` and nested `def`s add nothing themselves.
    Unlike radon, which scores a nested function on its own, the decision points inside nested
    functions and classes count towards the enclosing function: the probe sees one piece of code.
    Decorators and default values are outside the body and not counted.
    """
    function = _single_function(code)
    body_nodes = (node for statement in function.body for node in ast.walk(statement))
    return 1 + sum(_decision_points(node) for node in body_nodes)


def _decision_points(node: ast.AST) -> int:
    if isinstance(node, (ast.If, ast.IfExp)):
        return 1
    if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
        return 1 + bool(node.orelse)
    if isinstance(node, _TRY_NODES):
        return len(node.handlers) + bool(node.orelse)
    if isinstance(node, ast.BoolOp):
        return len(node.values) - 1
    if isinstance(node, ast.comprehension):
        return 1 + len(node.ifs)
    if isinstance(node, ast.Match):
        has_catch_all = any(_is_bare_capture(case.pattern) for case in node.cases)
        return max(0, len(node.cases) - has_catch_all)
    return 0


def _is_bare_capture(pattern: ast.pattern) -> bool:
    """Whether a case pattern is `_` or a bare name, which matches anything (radon's test)."""
    return isinstance(pattern, ast.MatchAs) and pattern.pattern is None


def _single_function(code: str) -> _FunctionNode:
    """The one function definition that makes up `code` (a SyntaxError if it does not parse)."""
    body = ast.parse(code).body
    if len(body) != 1 or not isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValueError("expected code holding exactly one function definition")
    return body[0]
