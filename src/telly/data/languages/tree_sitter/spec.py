"""What a language gives the tree-sitter implementation, and the reading of its trees every part shares.

A `TreeSitterSpec` names what differs between languages (the node types of functions, comments,
literals and decision points, where a name is bound, the reserved words, how a doc comment is
cleaned). `Trees` parses with the spec's grammar and reads what extraction, properties and
rewrites all need: one function's tree from its code, its tokens, its statements.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import tree_sitter

# (parent node type, field name); a field of None matches a child in any field or none.
Position = tuple[str, str | None]


@dataclass(frozen=True)
class TreeSitterSpec:
    name: str
    display_name: str
    suffixes: tuple[str, ...]
    grammar: Callable[[], object]  # tree_sitter_<language>.language
    default_sources: tuple[Path, ...]
    # Text around one function's code that makes it a unit the grammar parses.
    wrap: tuple[str, str]
    function_types: frozenset[str]
    renamable_function_types: frozenset[str]  # those whose name the clone builder may change
    scope_types: frozenset[str]  # named containers that qualify function names: classes, modules
    comment_types: frozenset[str]
    # A run of comments directly above a function (Ruby's `#` lines), or only the nearest (Javadoc).
    doc_is_comment_run: bool
    # The comment texts above a function -> (docstring, summary), or None if they are no doc.
    clean_doc: Callable[[list[str]], tuple[str, str] | None]
    identifier_types: frozenset[str]  # leaves that are NAME tokens
    local_identifier_type: str  # the leaf type of a local variable's name
    string_types: frozenset[str]  # literals kept as one STRING token
    char_types: frozenset[str]  # string_types written <CHAR_LIT> in completion data
    number_types: frozenset[str]
    keywords: frozenset[str]  # reserved words: KEYWORD tokens, never a new local's name
    statement_list_types: frozenset[str]  # nodes whose named children are statements
    decision_types: frozenset[str]
    boolean_operators: frozenset[str]  # in an `operator` field: 1 decision point each
    fallback_keyword: str | None  # a decision node starting with it is no decision (`default:`)
    binding_positions: frozenset[Position]  # a local identifier here binds a local variable
    blocking_positions: frozenset[Position]  # a name here is never renamed (a keyword argument)
    member_positions: frozenset[Position]  # an identifier here names a member, not a variable
    nested_scope_types: frozenset[str]  # scopes whose names are left alone (a nested class)
    introspection_names: frozenset[str]  # calls that see locals by name: no renaming at all
    free_layout: bool  # whitespace between tokens never matters (Java; not Ruby)


class Trees:
    """A spec's parser, and what every part reads off its trees."""

    def __init__(self, spec: TreeSitterSpec):
        self.spec = spec

    @functools.cached_property
    def parser(self) -> tree_sitter.Parser:
        return tree_sitter.Parser(tree_sitter.Language(self.spec.grammar()))

    def parse_function(self, code: str) -> tuple[tree_sitter.Tree, tree_sitter.Node]:
        """The tree of `code` (wrapped as the spec says) and its function node.

        Raises ValueError if the code does not parse or holds no function.
        """
        prefix, suffix = self.spec.wrap
        tree = self.parser.parse((prefix + code + suffix).encode("utf-8"))
        if tree.root_node.has_error:
            raise ValueError(f"{self.spec.display_name} code does not parse")
        pending = [tree.root_node]
        while pending:
            node = pending.pop(0)
            if node.type in self.spec.function_types:
                return tree, node
            pending[:0] = node.named_children
        raise ValueError(f"no {self.spec.display_name} function in the code")

    def tokens(self, node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
        """The code tokens under `node` in order: leaves and whole string literals, no comments.

        The walk keeps its own stack of nodes to visit: a token is handed up once, not through a
        generator per level of the tree.
        """
        pending = [node]
        while pending:
            node = pending.pop()
            if node.type in self.spec.comment_types or node.start_byte == node.end_byte:
                continue
            if node.child_count == 0 or node.type in self.spec.string_types:
                yield node
            else:
                pending.extend(reversed(node.children))

    def statement_count(self, node: tree_sitter.Node) -> int:
        """The statements of every statement list in `node`, nested ones included."""
        count = 0
        pending = [node]
        while pending:
            current = pending.pop()
            if current.type in self.spec.statement_list_types:
                count += sum(child.type not in self.spec.comment_types for child in current.named_children)
            pending.extend(current.named_children)
        return count


def leading_whitespace(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]
