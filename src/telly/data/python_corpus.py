"""Functions and their docstrings from Python source, read with Python's own `ast` and `tokenize`.

Every function (top level, method or nested) becomes one `CodeFunction`: its code without the
docstring, the docstring's first paragraph as the natural-language summary, and the tokens of
both. This is the Python plug-in's extraction (`telly.data.languages.python`).
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from collections.abc import Iterator

from telly.data.language import MIN_DOCSTRING_WORDS, CodeFunction, summary_tokens

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
# The fields that hold statements (or the `except` clauses and `match` cases that hold them).
_STATEMENT_LISTS = frozenset({"body", "orelse", "finalbody", "handlers", "cases"})

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
LAYOUT_TOKENS = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NEWLINE,
        tokenize.NL,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
)


def extract_functions(
    source: str, path: str, require_docstring: bool = True, min_statements: int = 0
) -> list[CodeFunction]:
    """Every function in `source` whose docstring's first paragraph has enough words.

    With `require_docstring=False`, every function, documented or not (a docstring is still cut
    out of `code`; an undocumented function has `docstring == ""`). Functions whose body, without
    the docstring, has fewer than `min_statements` statements (nested ones counted) are left out.
    Raises what `ast.parse` raises for source that does not parse. A function whose docstring
    cannot be cut out cleanly (it shares a line with other code) is left out rather than emitted
    with wrong code.
    """
    # Python itself treats CR and CRLF as line ends; normalising keeps AST line numbers valid.
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    lines = source.split("\n")
    functions = []
    for node, qualified_name in _functions_with_names(ast.parse(source)):
        if min_statements and _statement_count(node) < min_statements:
            continue
        docstring = ast.get_docstring(node, clean=True)
        first_paragraph = "" if docstring is None else docstring_summary(docstring)
        if require_docstring and len(first_paragraph.split()) < MIN_DOCSTRING_WORDS:
            continue
        function = _function_from_node(
            node, lines, path, qualified_name, docstring, first_paragraph
        )
        if function is not None:
            functions.append(function)
    return functions


def docstring_summary(docstring: str) -> str:
    """The docstring's first paragraph, its lines joined with single spaces."""
    return " ".join(_PARAGRAPH_BREAK.split(docstring, maxsplit=1)[0].split())


def _functions_with_names(node: ast.AST, prefix: str = "") -> Iterator[tuple[_FunctionNode, str]]:
    """Yield `(function node, qualified name)` for every function, in source order.

    Only statements define functions, so the walk follows the statement lists alone and never
    enters an expression (a lambda's body is one): most of a tree's nodes are never visited.
    """
    for field in node._fields:
        if field not in _STATEMENT_LISTS:
            continue
        for child in getattr(node, field):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    yield child, name
                yield from _functions_with_names(child, name + ".")
            else:
                # Functions defined under `if`, `try`, `with`, `match`, ... keep the enclosing prefix.
                yield from _functions_with_names(child, prefix)


def _statement_count(node: _FunctionNode) -> int:
    """The statements in the function's body, nested ones included, a docstring not counted."""
    body = node.body[1:] if ast.get_docstring(node, clean=False) is not None else node.body
    return sum(isinstance(inner, ast.stmt) for statement in body for inner in ast.walk(statement))


def _function_from_node(
    node: _FunctionNode,
    lines: list[str],
    path: str,
    qualified_name: str,
    docstring: str | None,
    first_paragraph: str,
) -> CodeFunction | None:
    first_line = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    function_lines = _dedent(lines[first_line - 1 : node.end_lineno])
    if docstring is None:
        code_lines = function_lines
    elif _docstring_on_own_lines(node, lines):
        code_lines = _without_docstring(node, function_lines, first_line)
    else:
        return None
    code = "\n".join(code_lines)
    try:
        ast.parse(code)
    except SyntaxError:
        return None  # a layout the line-based cut does not handle; never emit broken code
    return CodeFunction(
        language="python",
        path=path,
        func_name=qualified_name,
        code=code,
        original_string="\n".join(function_lines),
        docstring=docstring or "",
        summary=first_paragraph,
        code_tokens=tuple(python_tokens(code)),
        docstring_tokens=summary_tokens(first_paragraph),
        line=first_line,
    )


def _without_docstring(
    node: _FunctionNode, function_lines: list[str], first_line: int
) -> list[str]:
    docstring_node = node.body[0]
    # The docstring's lines as 0-based indices into function_lines, end exclusive.
    doc_start = docstring_node.lineno - first_line
    doc_end = docstring_node.end_lineno - first_line + 1
    if len(node.body) == 1:
        # The body would be empty without the docstring; `pass` keeps it valid.
        indent = _leading_whitespace(function_lines[doc_start])
        return function_lines[:doc_start] + [indent + "pass"] + function_lines[doc_end:]
    return function_lines[:doc_start] + function_lines[doc_end:]


def _docstring_on_own_lines(node: _FunctionNode, lines: list[str]) -> bool:
    """Whether the docstring's lines hold nothing but the docstring (and perhaps a comment)."""
    docstring_node = node.body[0]
    start_line = lines[docstring_node.lineno - 1]
    # col_offset counts UTF-8 bytes, not characters.
    text_before = start_line.encode("utf-8")[: docstring_node.col_offset]
    if text_before.strip():
        return False  # e.g. `def f(): "doc"` on one line
    next_statement = node.body[1] if len(node.body) > 1 else None
    return next_statement is None or next_statement.lineno > docstring_node.end_lineno


def _dedent(lines: list[str]) -> list[str]:
    """Remove the first line's indentation from every line that starts with it.

    Unlike textwrap.dedent, a continuation or string line indented less than the `def` (say a
    multi-line string at column 0) does not stop the dedent: it is just left as it is.
    """
    indent = _leading_whitespace(lines[0])
    return [line[len(indent) :] if line.startswith(indent) else line for line in lines]


def _leading_whitespace(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def python_tokens(code: str) -> list[str]:
    """Python's own tokens of `code` (code that parses), without comments and layout (newlines,
    indentation)."""
    return [token.string for token in _tokens(code) if token.type not in LAYOUT_TOKENS]


def _tokenize_module_tokens(code: str) -> Iterator[tokenize.TokenInfo]:
    return tokenize.generate_tokens(io.StringIO(code).readline)


# Python 3.11's `tokenize` is written in Python and takes a third of a code-search build; the
# interpreter's C tokenizer, which `tokenize` itself uses from 3.12 on, gives the same tokens of
# code that parses in a fifth of the time. (It gives operators their exact type, never a layout
# one, and leaves out comments, which are dropped here anyway.)
_tokens = tokenize._generate_tokens_from_c_tokenizer if sys.version_info[:2] == (3, 11) else _tokenize_module_tokens
