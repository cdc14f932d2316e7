"""The code properties the probes predict, read from tree-sitter trees: Java's and Ruby's.

The same three as Python's (`telly.data.python_properties`): each token's lexical type, the SBT
of the function's tree, its cyclomatic complexity.
"""

from __future__ import annotations

import tree_sitter

from telly.data.languages.tree_sitter.spec import Trees


class CodeProperties:
    """Lexical types, SBT and cyclomatic complexity of one function of a spec's language."""

    def __init__(self, trees: Trees):
        self.trees = trees
        self.spec = trees.spec

    def lexical_types(self, code: str) -> list[tuple[str, str]]:
        """`(token, type)` per code token: identifiers NAME, literals NUMBER or STRING, reserved
        words KEYWORD (`true`, `null`, `self` too), other unnamed leaves OPERATOR (punctuation too).

        Raises ValueError for a named leaf of no known kind.
        """
        _, function = self.trees.parse_function(code)
        return [(token.text.decode("utf-8"), self._lexical_type(token)) for token in self.trees.tokens(function)]

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
        raise ValueError(f"cannot classify {spec.display_name} token {token.text!r} ({token.type})")

    def sbt(self, code: str) -> list[str]:
        """The SBT (Hu et al., ICPC 2018) of the function's tree: `(` label, children, `)` label.

        Labels are named node types in CamelCase (`MethodDeclaration`); identifiers carry their
        text (`Identifier_x`, as Hu et al.'s `SimpleName_x`) and literals their type only
        (`StringLiteral`). Unnamed leaves are left out (their parent's type implies them) except
        operators (an `operator` field: `+`, `&&`), which tell `a + b` from `a - b`. Comments
        are left out.
        """
        _, function = self.trees.parse_function(code)
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
        _, function = self.trees.parse_function(code)
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


def _camel(node_type: str) -> str:
    """`method_declaration` -> `MethodDeclaration`, the style of Hu et al.'s SBT labels."""
    return "".join(part.capitalize() for part in node_type.split("_"))
