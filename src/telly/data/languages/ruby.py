"""The Ruby plug-in: the tree-sitter implementation set up for Ruby (tree-sitter-ruby)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import tree_sitter_ruby

from telly.data.languages.tree_sitter import TreeSitterLanguage, TreeSitterSpec
from telly.data.python_corpus import docstring_summary

# Ruby's standard library (Debian/Ubuntu package ruby3.1, from `apt-get install ruby`).
RUBY_STDLIB = Path("/usr/lib/ruby/3.1.0")

# Ruby's reserved words (doc/keywords.rdoc), and `self`, `nil`, `true`, `false`.
KEYWORDS = frozenset(
    """__ENCODING__ __LINE__ __FILE__ BEGIN END alias and begin break case class def defined? do
    else elsif end ensure false for if in module next nil not or redo rescue retry return self
    super then true undef unless until when while yield""".split()
)


def clean_comment_block(comments: list[str]) -> tuple[str, str] | None:
    """(the `#` lines without their `#` and common indentation, their first paragraph on one
    line); None if the block is not all `#` lines (an `=begin` block is no method doc)."""
    if not all(comment.startswith("#") for comment in comments):
        return None
    docstring = textwrap.dedent("\n".join(comment[1:] for comment in comments)).strip()
    return docstring, docstring_summary(docstring)


_STRINGS = frozenset(
    {
        "string",
        "chained_string",
        "character",
        "simple_symbol",
        "delimited_symbol",
        "hash_key_symbol",
        "bare_symbol",
        "regex",
        "subshell",
        "string_array",
        "symbol_array",
        "heredoc_beginning",
        "heredoc_body",
    }
)

RUBY = TreeSitterLanguage(
    TreeSitterSpec(
        name="ruby",
        display_name="Ruby",
        suffixes=(".rb",),
        grammar=tree_sitter_ruby.language,
        default_sources=(RUBY_STDLIB,),
        wrap=("", ""),  # a method parses on its own
        function_types=frozenset({"method", "singleton_method"}),
        renamable_function_types=frozenset({"method", "singleton_method"}),
        scope_types=frozenset({"class", "module"}),
        comment_types=frozenset({"comment"}),
        doc_is_comment_run=True,
        clean_doc=clean_comment_block,
        identifier_types=frozenset(
            {"identifier", "constant", "instance_variable", "class_variable", "global_variable"}
        ),
        local_identifier_type="identifier",
        string_types=_STRINGS,
        char_types=frozenset({"character"}),
        number_types=frozenset({"integer", "float", "rational", "complex"}),
        keywords=KEYWORDS,
        statement_list_types=frozenset(
            {"body_statement", "then", "else", "do", "block_body", "begin", "ensure"}
        ),
        decision_types=frozenset(
            {
                "if",
                "unless",
                "elsif",
                "if_modifier",
                "unless_modifier",
                "while",
                "until",
                "while_modifier",
                "until_modifier",
                "for",
                "rescue",
                "rescue_modifier",
                "conditional",
                "when",
                "in_clause",
            }
        ),
        boolean_operators=frozenset({"&&", "||", "and", "or"}),
        fallback_keyword=None,
        binding_positions=frozenset(
            {
                ("assignment", "left"),
                ("operator_assignment", "left"),
                ("left_assignment_list", None),
                ("rest_assignment", None),
                ("destructured_left_assignment", None),
                ("method_parameters", None),
                ("block_parameters", None),
                ("lambda_parameters", None),
                ("destructured_parameter", None),
                ("optional_parameter", "name"),
                ("splat_parameter", "name"),
                ("hash_splat_parameter", "name"),
                ("block_parameter", "name"),
                ("exception_variable", None),
                ("for", "pattern"),
            }
        ),
        # A keyword parameter's name is part of the method's interface (`f(limit: 3)`).
        blocking_positions=frozenset({("keyword_parameter", "name"), ("pair", "key")}),
        member_positions=frozenset(
            {
                ("call", "method"),
                ("method", "name"),
                ("singleton_method", "name"),
                ("alias", None),
                ("undef", None),
            }
        ),
        nested_scope_types=frozenset({"method", "singleton_method", "class", "module", "singleton_class"}),
        introspection_names=frozenset({"binding", "local_variables", "eval"}),
        free_layout=False,
    )
)
