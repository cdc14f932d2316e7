"""One implementation of the `Language` interface on tree-sitter syntax trees, for Java and Ruby.

Everything here is language-neutral; a `TreeSitterSpec` names what differs between languages (the
node types of functions, comments, literals and decision points, where a name is bound, the
reserved words, how a doc comment is cleaned). From one function's tree come:
- extraction: every method with a body, its doc comment (the comments directly above it), its
  code without them, and its tokens (leaves of the tree; a string literal is one token);
- the probed properties: each token's lexical type, the SBT of the tree, cyclomatic complexity;
- clones: local variables and parameters renamed, comments dropped and the layout changed (a
  different indentation width; with a free layout, braces moved to or from their own line). Every
  rewrite is parsed again and dropped if the tree has an error;
- generation and completion data: tokens joined by spaces, as CONCODE and CodeXGLUE's Java data.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import tree_sitter

from telly.data.language import MIN_DOCSTRING_WORDS, CodeFunction, Rewrite, summary_tokens
from telly.data.names import NAME_POOL, NameSupply

REWRITE_KINDS = ("rename", "reformat")
INDENT_WIDTHS = (2, 3, 4, 8)
STRING_PLACEHOLDER, NUMBER_PLACEHOLDER, CHAR_PLACEHOLDER = "<STR_LIT>", "<NUM_LIT>", "<CHAR_LIT>"

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


def _matches(positions: frozenset[Position], parent_type: str, field: str | None) -> bool:
    return (parent_type, field) in positions or (parent_type, None) in positions


def _camel(node_type: str) -> str:
    """`method_declaration` -> `MethodDeclaration`, the style of Hu et al.'s SBT labels."""
    return "".join(part.capitalize() for part in node_type.split("_"))


def _leading_whitespace(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


@dataclass
class _Locals:
    """The locals of one function that can be renamed, in order of first binding, and where."""

    names: list[str]
    occurrences: list[tree_sitter.Node]  # every identifier node to rename


class TreeSitterLanguage:
    rewrite_kinds = REWRITE_KINDS

    def __init__(self, spec: TreeSitterSpec):
        self.spec = spec
        self.name = spec.name
        self.display_name = spec.display_name
        self.suffixes = spec.suffixes

    @functools.cached_property
    def _parser(self) -> tree_sitter.Parser:
        return tree_sitter.Parser(tree_sitter.Language(self.spec.grammar()))

    def default_sources(self) -> list[Path]:
        return list(self.spec.default_sources)

    # --- Extraction

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
        for node, qualified_name in self._functions_with_names(self._parser.parse(data).root_node, ""):
            body = node.child_by_field_name("body")
            if node.has_error or body is None:
                continue
            if min_statements and self._statement_count(body) < min_statements:
                continue
            doc_comments = self._doc_comments(node, lines)
            doc = self.spec.clean_doc([c.text.decode("utf-8") for c in doc_comments]) if doc_comments else None
            docstring, summary = doc or ("", "")
            if require_docstring and len(summary.split()) < MIN_DOCSTRING_WORDS:
                continue
            indent = _leading_whitespace(lines[node.start_point.row])
            code = _dedent(node.text.decode("utf-8"), indent)
            start = doc_comments[0].start_byte if doc else node.start_byte
            functions.append(
                CodeFunction(
                    language=self.name,
                    path=path,
                    func_name=qualified_name,
                    code=code,
                    original_string=_dedent(data[start : node.end_byte].decode("utf-8"), indent),
                    docstring=docstring,
                    summary=summary,
                    code_tokens=tuple(token.text.decode("utf-8") for token in self._tokens(node)),
                    docstring_tokens=summary_tokens(summary),
                )
            )
        return functions

    def _functions_with_names(self, node: tree_sitter.Node, prefix: str) -> Iterator[tuple[tree_sitter.Node, str]]:
        """`(function node, qualified name)` for every function under `node`, in source order."""
        for child in node.named_children:
            name_node = child.child_by_field_name("name")
            name = prefix + name_node.text.decode("utf-8") if name_node is not None else None
            if child.type in self.spec.function_types and name is not None:
                yield child, name
                yield from self._functions_with_names(child, name + ".")
            elif child.type in self.spec.scope_types and name is not None:
                yield from self._functions_with_names(child, name + ".")
            else:
                yield from self._functions_with_names(child, prefix)

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

    def _statement_count(self, node: tree_sitter.Node) -> int:
        """The statements of every statement list in `node`, nested ones included."""
        count = 0
        pending = [node]
        while pending:
            current = pending.pop()
            if current.type in self.spec.statement_list_types:
                count += sum(child.type not in self.spec.comment_types for child in current.named_children)
            pending.extend(current.named_children)
        return count

    def _tokens(self, node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
        """The code tokens under `node` in order: leaves and whole string literals, no comments."""
        if node.type in self.spec.comment_types or node.start_byte == node.end_byte:
            return
        if node.child_count == 0 or node.type in self.spec.string_types:
            yield node
            return
        for child in node.children:
            yield from self._tokens(child)

    # --- One function's code

    def _parse_function(self, code: str) -> tuple[tree_sitter.Tree, tree_sitter.Node]:
        """The tree of `code` (wrapped as the spec says) and its function node.

        Raises ValueError if the code does not parse or holds no function.
        """
        prefix, suffix = self.spec.wrap
        tree = self._parser.parse((prefix + code + suffix).encode("utf-8"))
        if tree.root_node.has_error:
            raise ValueError(f"{self.display_name} code does not parse")
        pending = [tree.root_node]
        while pending:
            node = pending.pop(0)
            if node.type in self.spec.function_types:
                return tree, node
            pending[:0] = node.named_children
        raise ValueError(f"no {self.display_name} function in the code")

    def lexical_types(self, code: str) -> list[tuple[str, str]]:
        """`(token, type)` per code token: identifiers NAME, literals NUMBER or STRING, reserved
        words KEYWORD (`true`, `null`, `self` too), other unnamed leaves OPERATOR (punctuation too).

        Raises ValueError for a named leaf of no known kind.
        """
        _, function = self._parse_function(code)
        return [(token.text.decode("utf-8"), self._lexical_type(token)) for token in self._tokens(function)]

    def _lexical_type(self, token: tree_sitter.Node) -> str:
        spec = self.spec
        if token.type in spec.string_types:
            return "STRING"
        if token.type in spec.number_types:
            return "NUMBER"
        if token.type in spec.identifier_types:
            return "NAME"
        if token.text.decode("utf-8") in spec.keywords:
            return "KEYWORD"
        if not token.is_named:
            return "OPERATOR"
        raise ValueError(f"cannot classify {self.display_name} token {token.text!r} ({token.type})")

    def sbt(self, code: str) -> list[str]:
        """The SBT (Hu et al., ICPC 2018) of the function's tree: `(` label, children, `)` label.

        Labels are named node types in CamelCase (`MethodDeclaration`); identifiers carry their
        text (`Identifier_x`, as Hu et al.'s `SimpleName_x`) and literals their type only
        (`StringLiteral`). Unnamed leaves are left out (their parent's type implies them) except
        operators (an `operator` field: `+`, `&&`), which tell `a + b` from `a - b`. Comments
        are left out.
        """
        _, function = self._parse_function(code)
        return self._sbt(function)

    def _sbt(self, node: tree_sitter.Node) -> list[str]:
        spec = self.spec
        if not node.is_named:  # an operator
            label = node.text.decode("utf-8")
            return ["(", label, ")", label]
        label = _camel(node.type)
        if node.type in spec.identifier_types:
            label = f"{label}_{node.text.decode('utf-8')}"
        children = []
        if node.type not in spec.string_types | spec.number_types | spec.identifier_types:
            children = [
                child
                for index, child in enumerate(node.children)
                if (child.is_named and child.type not in spec.comment_types)
                or (not child.is_named and node.field_name_for_child(index) == "operator")
            ]
        return ["(", label, *(token for child in children for token in self._sbt(child)), ")", label]

    def cyclomatic_complexity(self, code: str) -> int:
        """1 + the decision points in the function's body: one per node of the spec's decision
        types (a branch, loop, `catch`/`rescue`, `case` label, conditional expression; not a
        fallback `default:`) and one per boolean operator (`&&`, `||`, Ruby's `and`/`or`)."""
        _, function = self._parse_function(code)
        spec = self.spec
        decisions = 0
        pending = [function.child_by_field_name("body")]
        while pending:
            node = pending.pop()
            if node.type in spec.decision_types:
                first = node.children[0] if node.children else None
                decisions += first is None or first.type != spec.fallback_keyword
            operator = node.child_by_field_name("operator")
            if operator is not None and operator.text.decode("utf-8") in spec.boolean_operators:
                decisions += 1
            pending.extend(node.named_children)
        return 1 + decisions

    def generation_example(self, function: CodeFunction) -> tuple[str, str] | str:
        """The tokens before the body, and the tokens of the body's statements."""
        _, node = self._parse_function(function.code)
        body = node.child_by_field_name("body")
        if not self._statement_count(body):
            return "empty body"
        signature = [token for token in self._tokens(node) if token.end_byte <= body.start_byte]
        statements = [
            token
            for statement in body.named_children
            for token in self._tokens(statement)
        ]
        return _joined(signature), _joined(statements)

    def completion_lines(self, function: CodeFunction) -> list[str] | str:
        """Per source line, its tokens joined by spaces, literals as <STR_LIT>, <NUM_LIT>, <CHAR_LIT>."""
        _, node = self._parse_function(function.code)
        if not self._statement_count(node.child_by_field_name("body")):
            return "empty body"
        lines: dict[int, list[str]] = {}
        for token in self._tokens(node):
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

    # --- Clones

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
            tree, function = self._parse_function(code)
        except ValueError:
            return None
        local = self._locals(function)
        tokens = list(self._tokens(function))
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
            self._parse_function(laid_out)
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
        _, function = self._parse_function(code)
        return self._canonical_form(list(self._tokens(function)), self._locals(function), function.child_by_field_name("name"))

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
                indent = _leading_whitespace(source[line_start : before.start_byte].decode("utf-8"))
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
        tree, _ = self._parse_function(code)
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
            row: len(_leading_whitespace(line.expandtabs(4)))
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


def _dedent(text: str, indent: str) -> str:
    """`text` (starting at its first token) with `indent` removed from every later line that has it."""
    first, *rest = text.split("\n")
    return "\n".join([first, *(line[len(indent) :] if line.startswith(indent) else line for line in rest)])


def _joined(tokens: list[tree_sitter.Node]) -> str:
    return " ".join(token.text.decode("utf-8") for token in tokens)
