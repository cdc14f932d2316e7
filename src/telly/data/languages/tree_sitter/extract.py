"""Functions from source files through tree-sitter trees, and what the generation builders read of them.

Every method with a body becomes a `CodeFunction`: its doc comment (the comments directly above
it), its code without them, and its tokens (leaves of the tree; a string literal is one token).
For generation and completion data a function is its tokens joined by spaces, as CONCODE and
CodeXGLUE's Java data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import tree_sitter

from telly.data.language import MIN_DOCSTRING_WORDS, CodeFunction, summary_tokens
from telly.data.languages.tree_sitter.spec import Trees, leading_whitespace

STRING_PLACEHOLDER, NUMBER_PLACEHOLDER, CHAR_PLACEHOLDER = "<STR_LIT>", "<NUM_LIT>", "<CHAR_LIT>"


class FunctionReader:
    """Extraction of a spec's functions, and their signature, body and lines for task data."""

    def __init__(self, trees: Trees):
        self.trees = trees
        self.spec = trees.spec

    def extract_functions(
        self, source: str, path: str, require_docstring: bool = True, min_statements: int = 0
    ) -> list[CodeFunction]:
        """Every function with a body, as `python_corpus.extract_functions` describes.

        Functions whose own subtree holds a syntax error are left out (tree-sitter parses the rest
        of a file around an error); so are bodiless ones (abstract and interface methods).
        """
        source = source.replace("\r\n", "\n").replace("\r", "\n")
        data = source.encode("utf-8")
        lines = source.split("\n")
        functions = []
        for node, qualified_name in self._functions_with_names(self.trees.parser.parse(data).root_node):
            body = node.child_by_field_name("body")
            if node.has_error or body is None:
                continue
            if min_statements and self.trees.statement_count(body) < min_statements:
                continue
            doc_comments = self._doc_comments(node, lines)
            doc = self.spec.clean_doc([c.text.decode("utf-8") for c in doc_comments]) if doc_comments else None
            docstring, summary = doc or ("", "")
            if require_docstring and len(summary.split()) < MIN_DOCSTRING_WORDS:
                continue
            indent = leading_whitespace(lines[node.start_point.row])
            code = _dedent(node.text.decode("utf-8"), indent)
            start = doc_comments[0].start_byte if doc else node.start_byte
            functions.append(
                CodeFunction(
                    language=self.spec.name,
                    path=path,
                    func_name=qualified_name,
                    code=code,
                    original_string=_dedent(data[start : node.end_byte].decode("utf-8"), indent),
                    docstring=docstring,
                    summary=summary,
                    code_tokens=tuple(token.text.decode("utf-8") for token in self.trees.tokens(node)),
                    docstring_tokens=summary_tokens(summary),
                    line=node.start_point.row + 1,
                )
            )
        return functions

    @functools.cached_property
    def _function_query(self) -> tree_sitter.Query:
        patterns = " ".join(f"({node_type})" for node_type in sorted(self.spec.function_types))
        return tree_sitter.Query(self.trees.parser.language, f"[{patterns}] @function")

    def _functions_with_names(self, root: tree_sitter.Node) -> Iterator[tuple[tree_sitter.Node, str]]:
        """`(function node, qualified name)` for every named function under `root`, in source order.

        A tree-sitter query finds the functions without a visit from Python to every node of the
        tree; the named functions and scopes (classes, modules) around one qualify its name.
        """
        found = tree_sitter.QueryCursor(self._function_query).captures(root).get("function", [])
        for node in sorted(found, key=lambda function: function.start_byte):  # an outer function first
            names = [self._name(node)]
            if names[0] is None:
                continue
            around = node.parent
            while around is not None:
                if around.type in self.spec.function_types or around.type in self.spec.scope_types:
                    names.append(self._name(around))
                around = around.parent
            yield node, ".".join(name for name in reversed(names) if name is not None)

    @staticmethod
    def _name(node: tree_sitter.Node) -> str | None:
        name = node.child_by_field_name("name")
        return None if name is None else name.text.decode("utf-8")

    def _doc_comments(self, node: tree_sitter.Node, lines: list[str]) -> list[tree_sitter.Node]:
        """The comments directly above `node`, each alone on its lines, top first."""
        comments: list[tree_sitter.Node] = []
        row = node.start_point.row
        # A class's first method can open the class's body node (Ruby), with the comments before it.
        while node.prev_sibling is None and node.parent is not None and node.parent.start_byte == node.start_byte:
            node = node.parent
        sibling = node.prev_sibling
        while (
            sibling is not None
            and sibling.type in self.spec.comment_types
            and sibling.end_point.row >= row - 1
            and not lines[sibling.start_point.row][: sibling.start_point.column].strip()
        ):
            comments.insert(0, sibling)
            if not self.spec.doc_is_comment_run:
                break
            row, sibling = sibling.start_point.row, sibling.prev_sibling
        return comments

    def generation_example(self, function: CodeFunction) -> tuple[str, str] | str:
        """The tokens before the body, and the tokens of the body's statements."""
        _, node = self.trees.parse_function(function.code)
        body = node.child_by_field_name("body")
        if not self.trees.statement_count(body):
            return "empty body"
        signature = [token for token in self.trees.tokens(node) if token.end_byte <= body.start_byte]
        statements = [
            token
            for statement in body.named_children
            for token in self.trees.tokens(statement)
        ]
        return _joined(signature), _joined(statements)

    def completion_lines(self, function: CodeFunction) -> list[str] | str:
        """Per source line, its tokens joined by spaces, literals as <STR_LIT>, <NUM_LIT>, <CHAR_LIT>."""
        _, node = self.trees.parse_function(function.code)
        if not self.trees.statement_count(node.child_by_field_name("body")):
            return "empty body"
        lines: dict[int, list[str]] = {}
        for token in self.trees.tokens(node):
            lines.setdefault(token.start_point.row, []).append(self._normalised(token))
        return [" ".join(tokens) for tokens in lines.values()]

    def _normalised(self, token: tree_sitter.Node) -> str:
        if token.type in self.spec.char_types:
            return CHAR_PLACEHOLDER
        if token.type in self.spec.string_types:
            return STRING_PLACEHOLDER
        if token.type in self.spec.number_types:
            return NUMBER_PLACEHOLDER
        return token.text.decode("utf-8")


def _dedent(text: str, indent: str) -> str:
    """`text` (starting at its first token) with `indent` removed from every later line that has it."""
    first, *rest = text.split("\n")
    return "\n".join([first, *(line[len(indent) :] if line.startswith(indent) else line for line in rest)])


def _joined(tokens: list[tree_sitter.Node]) -> str:
    return " ".join(token.text.decode("utf-8") for token in tokens)
