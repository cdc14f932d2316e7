"""Clones of one function through its tree-sitter tree, for clone detection and the semantic probe.

Local variables and parameters are renamed, comments dropped and the layout changed (a different
indentation width; with a free layout, braces moved to or from their own line). Every rewrite is
parsed again and dropped if the tree has an error.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import tree_sitter

from telly.data.language import Rewrite
from telly.data.languages.tree_sitter.spec import Position, Trees, leading_whitespace
from telly.data.names import NAME_POOL, NameSupply

REWRITE_KINDS = ("rename", "reformat")
INDENT_WIDTHS = (2, 3, 4, 8)


def _matches(positions: frozenset[Position], parent_type: str, field: str | None) -> bool:
    return (parent_type, field) in positions or (parent_type, None) in positions


@dataclass
class _Locals:
    """The locals of one function that can be renamed, in order of first binding, and where."""

    names: list[str]
    occurrences: list[tree_sitter.Node]  # every identifier node to rename


class CloneRewriter:
    """Semantics-preserving rewrites of one function of a spec's language."""

    def __init__(self, trees: Trees):
        self.trees = trees
        self.spec = trees.spec

    def rewrite(
        self, code: str, rng: random.Random, function_names: Sequence[str] = ()
    ) -> Rewrite | None:
        """A clone: locals renamed (and the function, given `function_names`, to one of them it
        does not use), comments dropped, the layout changed; None if the result does not parse.

        A local is a name the function binds (a parameter, a local variable, a catch/rescue or loop
        variable, a lambda or block parameter) and uses nowhere as something else: not before its
        first binding, not in a nested class or method, not as a keyword parameter. Every
        occurrence of it in a variable position is renamed; fields and methods of the same name
        (`this.x`, `obj.x()`) are not. Renaming is by name over the whole function, not per block.
        """
        try:
            tree, function = self.trees.parse_function(code)
        except ValueError:
            return None
        local = self._locals(function)
        tokens = list(self.trees.tokens(function))
        names = NameSupply(
            {token.text.decode("utf-8") for token in tokens} | self.spec.keywords,
            rng.sample(NAME_POOL, len(NAME_POOL)),
        )
        mapping = {name: names.fresh() for name in local.names}
        renames = [(node.start_byte, node.end_byte, mapping[node.text.decode("utf-8")]) for node in local.occurrences]
        name_node = function.child_by_field_name("name")
        new_name = self._new_function_name(function, names, function_names, rng)
        if new_name is not None:
            renames.append((name_node.start_byte, name_node.end_byte, new_name))
        source = tree.root_node.text
        renamed = self._unwrapped(_edited(source, renames))
        laid_out = self._unwrapped(_edited(source, renames + self._layout_edits(function, tokens, source)))
        try:
            laid_out = self._reindented(laid_out, rng)
            self.trees.parse_function(laid_out)
        except ValueError:
            return None
        applied = (("rename",) if renames else ()) + (("reformat",) if laid_out != renamed else ())
        return Rewrite(
            code=laid_out,
            name=new_name or name_node.text.decode("utf-8"),
            applied=applied,
            original_canonical_form=self._canonical_form(tokens, local, name_node),
        )

    def canonical_form(self, code: str) -> str:
        """The function's tokens with its locals renamed `_v0`, `_v1`, ... and its name `_`.

        Two functions with equal canonical forms differ only in names, local names, layout and
        comments.
        """
        _, function = self.trees.parse_function(code)
        return self._canonical_form(list(self.trees.tokens(function)), self._locals(function), function.child_by_field_name("name"))

    def _canonical_form(self, tokens: list[tree_sitter.Node], local: _Locals, name_node: tree_sitter.Node) -> str:
        placeholders = {name: f"_v{index}" for index, name in enumerate(local.names)}
        renamed = {node.start_byte for node in local.occurrences}
        return " ".join(
            "_" if token.start_byte == name_node.start_byte
            else placeholders[token.text.decode("utf-8")] if token.start_byte in renamed
            else token.text.decode("utf-8")
            for token in tokens
        )

    def _locals(self, function: tree_sitter.Node) -> _Locals:
        spec = self.spec
        first_binding: dict[str, int] = {}  # name -> byte offset, in order of first binding
        blocked: set[str] = set()
        candidates: list[tree_sitter.Node] = []  # identifiers in variable positions
        pending = [(function, False)]
        while pending:
            node, nested = pending.pop()
            for index, child in enumerate(node.children):
                child_nested = nested or child.type in spec.nested_scope_types
                if child.type == spec.local_identifier_type:
                    name = child.text.decode("utf-8")
                    field = node.field_name_for_child(index)
                    if name in spec.introspection_names:
                        return _Locals([], [])
                    if child_nested or _matches(spec.blocking_positions, node.type, field):
                        blocked.add(name)
                    elif _matches(spec.binding_positions, node.type, field):
                        first_binding[name] = min(first_binding.get(name, child.start_byte), child.start_byte)
                        candidates.append(child)
                    elif not _matches(spec.member_positions, node.type, field):
                        candidates.append(child)
                pending.append((child, child_nested))
        for node in candidates:
            name = node.text.decode("utf-8")
            if node.start_byte < first_binding.get(name, -1):
                blocked.add(name)  # read before it is bound: a field or a method, not this local
        names = sorted((name for name in first_binding if name not in blocked), key=first_binding.get)
        kept = set(names)
        occurrences = [node for node in candidates if node.text.decode("utf-8") in kept]
        return _Locals(names, occurrences)

    def _new_function_name(
        self, function: tree_sitter.Node, names: NameSupply, function_names: Sequence[str], rng: random.Random
    ) -> str | None:
        """One of `function_names` the function does not use, if it may be renamed."""
        if function.type not in self.spec.renamable_function_types or not function_names:
            return None
        start = rng.randrange(len(function_names))
        for offset in range(len(function_names)):  # usually ends at once: most names are free
            name = function_names[(start + offset) % len(function_names)]
            if names.take(name):
                return name
        return None

    def _layout_edits(
        self, function: tree_sitter.Node, tokens: list[tree_sitter.Node], source: bytes
    ) -> list[tuple[int, int, str]]:
        """Comments become a space; with a free layout, each `{` that ends a line moves to a line
        of its own and each `{` alone on its line joins the line before."""
        edits = []
        pending = [function]
        while pending:
            node = pending.pop()
            if node.type in self.spec.comment_types:
                edits.append((node.start_byte, node.end_byte, " "))
            pending.extend(node.children)
        if not self.spec.free_layout:
            return edits
        for before, brace, after in zip(tokens, tokens[1:], tokens[2:] + [None]):
            between = source[before.end_byte : brace.start_byte]
            if brace.type != "{" or between.strip():
                continue  # not a brace, or a comment between
            if before.end_point.row == brace.start_point.row and (after is None or after.start_point.row > brace.end_point.row):
                line_start = source.rfind(b"\n", 0, before.start_byte) + 1
                indent = leading_whitespace(source[line_start : before.start_byte].decode("utf-8"))
                edits.append((before.end_byte, brace.start_byte, "\n" + indent))
            elif before.end_point.row < brace.start_point.row:
                edits.append((before.end_byte, brace.start_byte, " "))
        return edits

    def _unwrapped(self, wrapped: str) -> str:
        prefix, suffix = self.spec.wrap
        return wrapped[len(prefix) : len(wrapped) - len(suffix)]

    def _reindented(self, code: str, rng: random.Random) -> str:
        """Blank lines and trailing spaces dropped, indentation scaled to a new width.

        Lines inside a multi-line string (Java text blocks, Ruby heredocs) are kept as they are;
        the line a string starts on keeps its trailing characters. Raises ValueError if `code`
        does not parse.
        """
        tree, _ = self.trees.parse_function(code)
        prefix_rows = self.spec.wrap[0].count("\n")
        inside, opening = set(), set()
        pending = [tree.root_node]
        while pending:
            node = pending.pop()
            if node.type in self.spec.string_types and node.end_point.row > node.start_point.row:
                opening.add(node.start_point.row - prefix_rows)
                inside.update(range(node.start_point.row + 1 - prefix_rows, node.end_point.row + 1 - prefix_rows))
            else:
                pending.extend(node.children)
        lines = code.split("\n")
        widths = {
            row: len(leading_whitespace(line.expandtabs(4)))
            for row, line in enumerate(lines)
            if row not in inside and line.strip()
        }
        unit = functools.reduce(math.gcd, widths.values(), 0)
        new_width = rng.choice([width for width in INDENT_WIDTHS if width != unit])
        kept = []
        for row, line in enumerate(lines):
            if row in inside:
                kept.append(line)
            elif row in widths:
                text = line.lstrip() if row in opening else line.strip()
                kept.append(" " * (widths[row] // unit * new_width if unit else 0) + text)
        return "\n".join(kept)


def _edited(source: bytes, edits: list[tuple[int, int, str]]) -> str:
    """`source` with each `(start, end, replacement)` byte range replaced; ranges do not overlap."""
    parts, position = [], 0
    for start, end, replacement in sorted(edits):
        parts += [source[position:start], replacement.encode("utf-8")]
        position = end
    parts.append(source[position:])
    return b"".join(parts).decode("utf-8")
