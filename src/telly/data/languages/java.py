"""The Java plug-in: the tree-sitter implementation set up for Java (tree-sitter-java)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import tree_sitter_java

from telly.data.languages.tree_sitter import TreeSitterLanguage, TreeSitterSpec

# The JDK's own class library sources (Debian/Ubuntu package openjdk-17-source).
JDK_SOURCES = Path("/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip")

# The reserved words and literals of Java 17 (JLS §3.9), and the contextual `var`, `record`,
# `yield`, `sealed`, `permits` that tree-sitter-java parses as keywords.
KEYWORDS = frozenset(
    """abstract assert boolean break byte case catch char class const continue default do double
    else enum extends final finally float for goto if implements import instanceof int interface
    long native new package private protected public return short static strictfp super switch
    synchronized this throw throws transient try void volatile while true false null var record
    yield sealed permits non-sealed""".split()
)

_LEADING_STAR = re.compile(r"^\s*\*? ?")
_BLOCK_TAG = re.compile(r"^\s*@", re.MULTILINE)
_LINK_TAG = re.compile(r"\{@(?:link|linkplain)\s+([^\s}]+)(?:\s+([^}]*))?\}")
_INLINE_TAG = re.compile(r"\{@\w+\s*([^}]*)\}")
_HTML_TAG = re.compile(r"<[^>]*>")
_SENTENCE_END = re.compile(r"(?<=\.)\s")


def clean_javadoc(comments: list[str]) -> tuple[str, str] | None:
    """(the comment without `/**`, `*/` and line-leading `*`, its first sentence in plain text).

    The first sentence, as javadoc takes it: the description before the first block tag
    (`@param` ...), up to the first period followed by white space; inline tags become their text
    (`{@code x}` -> `x`, `{@link List#add label}` -> `label`) and HTML tags and entities plain
    text. None if the comment is not a Javadoc comment (`/** ... */`).
    """
    text = comments[-1]
    if not text.startswith("/**") or len(text) < 5:
        return None
    lines = [_LEADING_STAR.sub("", line, count=1) for line in text[3:-2].split("\n")]
    docstring = "\n".join(lines).strip()
    description = _BLOCK_TAG.split(docstring, maxsplit=1)[0]
    description = _LINK_TAG.sub(lambda match: match.group(2) or match.group(1).replace("#", "."), description)
    description = html.unescape(_HTML_TAG.sub(" ", _INLINE_TAG.sub(r"\1", description)))
    summary = _SENTENCE_END.split(" ".join(description.split()), maxsplit=1)[0]
    return docstring, summary


_NUMBERS = frozenset(
    {
        "decimal_integer_literal",
        "hex_integer_literal",
        "octal_integer_literal",
        "binary_integer_literal",
        "decimal_floating_point_literal",
        "hex_floating_point_literal",
    }
)

JAVA = TreeSitterLanguage(
    TreeSitterSpec(
        name="java",
        display_name="Java",
        suffixes=(".java",),
        grammar=tree_sitter_java.language,
        default_sources=(JDK_SOURCES,),
        # A method is no compilation unit of its own: Java only parses it inside a class body.
        wrap=("class _ {\n", "\n}"),
        function_types=frozenset({"method_declaration", "constructor_declaration"}),
        renamable_function_types=frozenset({"method_declaration"}),  # a constructor is its class's name
        scope_types=frozenset(
            {"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"}
        ),
        comment_types=frozenset({"line_comment", "block_comment"}),
        doc_is_comment_run=False,
        clean_doc=clean_javadoc,
        identifier_types=frozenset({"identifier", "type_identifier"}),
        local_identifier_type="identifier",
        string_types=frozenset({"string_literal", "character_literal"}),
        char_types=frozenset({"character_literal"}),
        number_types=_NUMBERS,
        keywords=KEYWORDS,
        statement_list_types=frozenset({"block", "constructor_body", "switch_block_statement_group"}),
        decision_types=frozenset(
            {
                "if_statement",
                "for_statement",
                "enhanced_for_statement",
                "while_statement",
                "do_statement",
                "catch_clause",
                "ternary_expression",
                "switch_label",
            }
        ),
        boolean_operators=frozenset({"&&", "||"}),
        fallback_keyword="default",
        binding_positions=frozenset(
            {
                ("variable_declarator", "name"),  # locals; also fields, but those are in a nested class
                ("formal_parameter", "name"),
                ("catch_formal_parameter", "name"),
                ("enhanced_for_statement", "name"),
                ("resource", "name"),
                ("lambda_expression", "parameters"),
                ("inferred_parameters", None),
                ("instanceof_expression", "name"),
            }
        ),
        # `x::m` names a method as plainly as `x.m()`, but without a field that says which is which.
        blocking_positions=frozenset({("method_reference", None)}),
        member_positions=frozenset(
            {
                ("field_access", "field"),
                ("method_invocation", "name"),
                ("method_declaration", "name"),
                ("constructor_declaration", "name"),
                ("element_value_pair", "key"),
                ("scoped_identifier", "name"),
                ("marker_annotation", "name"),
                ("annotation", "name"),
            }
        ),
        nested_scope_types=frozenset({"class_body"}),
        introspection_names=frozenset(),
        free_layout=True,
    )
)
