"""The probes' code properties: lexical types, their sub-word labels, SBT, cyclomatic complexity."""

from __future__ import annotations

import ast
import random
import sysconfig
import textwrap
from pathlib import Path

import mccabe
import pytest
from transformers import AutoTokenizer

from telly.data.language import LEXICAL_TYPES
from telly.data.python_corpus import extract_functions, python_tokens
from telly.data.python_properties import cyclomatic_complexity, lexical_types, sbt
from telly.models.load import default_model_dir
from telly.study.properties import IGNORED_LABEL, align_to_subwords, complexity_class

KEYWORD, NAME, NUMBER, STRING, OPERATOR = range(len(LEXICAL_TYPES))
IGNORED = IGNORED_LABEL

# Stdlib modules with many functions of every kind (loops, try/finally, nested functions, ...).
STDLIB_MODULES = ("argparse.py", "shutil.py", "tarfile.py", "textwrap.py", "difflib.py", "inspect.py")
STDLIB_SAMPLE_SIZE = 200


@pytest.fixture(scope="module")
def stdlib_functions():
    """A fixed random sample of STDLIB_SAMPLE_SIZE functions' code from STDLIB_MODULES."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    codes = [
        function.original_string
        for module in STDLIB_MODULES
        for function in extract_functions(
            (stdlib / module).read_text(encoding="utf-8"), module, require_docstring=False
        )
    ]
    return random.Random(0).sample(codes, STDLIB_SAMPLE_SIZE)


def _code(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --- lexical types ------------------------------------------------------------------------------


def test_lexical_types_of_a_hand_written_snippet():
    code = _code(
        """
        def f(match, x=0x1F):  # a comment
            return [True, None, 'a' f"{x!r}", 2.5e-3, match] if not x else x ** -1
        """
    )
    assert lexical_types(code) == [
        ("def", "KEYWORD"), ("f", "NAME"), ("(", "OPERATOR"),
        ("match", "NAME"),  # a soft keyword is a NAME
        (",", "OPERATOR"), ("x", "NAME"), ("=", "OPERATOR"), ("0x1F", "NUMBER"),
        (")", "OPERATOR"), (":", "OPERATOR"),
        ("return", "KEYWORD"), ("[", "OPERATOR"), ("True", "KEYWORD"), (",", "OPERATOR"),
        ("None", "KEYWORD"), (",", "OPERATOR"), ("'a'", "STRING"), ('f"{x!r}"', "STRING"),
        (",", "OPERATOR"), ("2.5e-3", "NUMBER"), (",", "OPERATOR"), ("match", "NAME"),
        ("]", "OPERATOR"), ("if", "KEYWORD"), ("not", "KEYWORD"), ("x", "NAME"),
        ("else", "KEYWORD"), ("x", "NAME"), ("**", "OPERATOR"), ("-", "OPERATOR"), ("1", "NUMBER"),
    ]


def test_lexical_types_keep_exactly_the_tokens_python_tokens_keeps(stdlib_functions):
    for code in stdlib_functions:
        typed = lexical_types(code)
        assert [text for text, _ in typed] == python_tokens(code)
        assert {lexical_type for _, lexical_type in typed} <= set(LEXICAL_TYPES)


def test_lexical_types_reject_code_python_cannot_tokenize():
    with pytest.raises(ValueError, match="cannot classify"):
        lexical_types("x = $y\n")


# --- sub-word alignment -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(default_model_dir())


ALIGNMENT_CODE = _code(
    """
    def getattribute_cache(self, key):
        return self._cache.get(key, 'no entry') or 0x1F
    """
)

# The MiniLM WordPiece sub-words of ALIGNMENT_CODE's tokens, and the labels worked out by hand for
# each: with "first", the first sub-word of a source token gets its type; with "last", its last
# sub-word does; every other position is ignored.
ALIGNMENT_SUBWORDS_AND_LABELS = [  # (sub-word, label with "first", label with "last")
    ("[CLS]", IGNORED, IGNORED),
    ("def", KEYWORD, KEYWORD),
    ("get", NAME, IGNORED), ("##att", IGNORED, IGNORED), ("##ri", IGNORED, IGNORED), ("##bu", IGNORED, IGNORED),
    ("##te", IGNORED, IGNORED), ("_", IGNORED, IGNORED), ("cache", IGNORED, NAME),  # getattribute_cache
    ("(", OPERATOR, OPERATOR), ("self", NAME, NAME), (",", OPERATOR, OPERATOR), ("key", NAME, NAME),
    (")", OPERATOR, OPERATOR), (":", OPERATOR, OPERATOR),
    ("return", KEYWORD, KEYWORD), ("self", NAME, NAME), (".", OPERATOR, OPERATOR),
    ("_", NAME, IGNORED), ("cache", IGNORED, NAME),  # _cache
    (".", OPERATOR, OPERATOR), ("get", NAME, NAME), ("(", OPERATOR, OPERATOR), ("key", NAME, NAME),
    (",", OPERATOR, OPERATOR),
    ("'", STRING, IGNORED), ("no", IGNORED, IGNORED), ("entry", IGNORED, IGNORED), ("'", IGNORED, STRING),  # 'no entry'
    (")", OPERATOR, OPERATOR), ("or", KEYWORD, KEYWORD),
    ("0", NUMBER, IGNORED), ("##x", IGNORED, IGNORED), ("##1", IGNORED, IGNORED), ("##f", IGNORED, NUMBER),  # 0x1F
    ("[SEP]", IGNORED, IGNORED),
]
LABEL_COLUMN = {"first": 1, "last": 2}


@pytest.mark.parametrize("subword", ["first", "last"])
def test_align_to_subwords_labels_one_subword_per_token(minilm_tokenizer, subword):
    input_ids, labels = align_to_subwords(lexical_types(ALIGNMENT_CODE), minilm_tokenizer, 40, subword)
    padding = 40 - len(ALIGNMENT_SUBWORDS_AND_LABELS)
    expected_subwords = [row[0] for row in ALIGNMENT_SUBWORDS_AND_LABELS]
    assert minilm_tokenizer.convert_ids_to_tokens(input_ids) == expected_subwords + ["[PAD]"] * padding
    assert labels == [row[LABEL_COLUMN[subword]] for row in ALIGNMENT_SUBWORDS_AND_LABELS] + [IGNORED] * padding


def test_the_paper_labels_the_last_subword_by_default(minilm_tokenizer):
    assert align_to_subwords(lexical_types(ALIGNMENT_CODE), minilm_tokenizer, 40) == \
        align_to_subwords(lexical_types(ALIGNMENT_CODE), minilm_tokenizer, 40, "last")


@pytest.mark.parametrize("subword", ["first", "last"])
def test_align_to_subwords_truncates(minilm_tokenizer, subword):
    input_ids, labels = align_to_subwords(lexical_types(ALIGNMENT_CODE), minilm_tokenizer, 12, subword)
    assert len(input_ids) == len(labels) == 12
    # [CLS] + the first 10 sub-words + [SEP]
    assert labels == [row[LABEL_COLUMN[subword]] for row in ALIGNMENT_SUBWORDS_AND_LABELS[:11]] + [IGNORED]
    assert minilm_tokenizer.convert_ids_to_tokens(input_ids)[-1] == "[SEP]"


def test_a_byte_level_bpe_reads_the_tokens_apart_as_a_decoder_reads_code(byte_level_tokenizer):
    """The ids are those of the space-joined code tokens (not "returnself" glued); each token's last
    sub-word carries its label."""
    tokens = lexical_types(ALIGNMENT_CODE)
    input_ids, labels = align_to_subwords(tokens, byte_level_tokenizer, 60)
    joined = byte_level_tokenizer(" ".join(text for text, _ in tokens))["input_ids"]
    assert input_ids[: len(joined)] == joined
    assert set(input_ids[len(joined) :]) == {byte_level_tokenizer.pad_token_id}
    assert [label for label in labels if label != IGNORED] == [LEXICAL_TYPES.index(kind) for _, kind in tokens]


def test_a_token_cut_short_by_truncation_has_no_last_subword(minilm_tokenizer):
    # 5 positions: [CLS] def get ##att [SEP]. getattribute_cache's last sub-word is cut off, so it
    # gets no label with "last", while "first" still labels `get`.
    tokens = lexical_types(ALIGNMENT_CODE)
    assert align_to_subwords(tokens, minilm_tokenizer, 5, "last")[1] == [IGNORED, KEYWORD, IGNORED, IGNORED, IGNORED]
    assert align_to_subwords(tokens, minilm_tokenizer, 5, "first")[1] == [IGNORED, KEYWORD, NAME, IGNORED, IGNORED]


# --- SBT ----------------------------------------------------------------------------------------


def test_sbt_of_a_tiny_function():
    code = _code(
        """
        def f(a):
            return a + 1
        """
    )
    assert sbt(code) == [
        "(", "FunctionDef",
            "(", "arguments", "(", "arg_a", ")", "arg_a", ")", "arguments",
            "(", "Return",
                "(", "BinOp",
                    "(", "Name_a", ")", "Name_a",
                    "(", "Add", ")", "Add",
                    "(", "Constant_int", ")", "Constant_int",
                ")", "BinOp",
            ")", "Return",
        ")", "FunctionDef",
    ]  # fmt: skip


def test_sbt_brackets_nest_and_close_with_their_label(stdlib_functions):
    for code in stdlib_functions:
        open_labels = []
        tokens = sbt(code)
        for bracket, label in zip(tokens[::2], tokens[1::2]):
            if bracket == "(":
                open_labels.append(label)
            else:
                assert bracket == ")" and open_labels.pop() == label
        assert not open_labels
        assert not {"Load", "Store", "Del"} & set(tokens)


@pytest.mark.parametrize(
    "code", ["x = 1\n", "def f():\n    pass\ndef g():\n    pass\n", "class C:\n    pass\n"]
)
def test_sbt_and_complexity_want_one_function(code):
    with pytest.raises(ValueError, match="exactly one function"):
        sbt(code)
    with pytest.raises(ValueError, match="exactly one function"):
        cyclomatic_complexity(code)


# --- cyclomatic complexity ----------------------------------------------------------------------


def _mccabe_complexity(code: str) -> int:
    """The `mccabe` package's (flake8's C901) complexity of the one function in `code`."""
    visitor = mccabe.PathGraphingAstVisitor()
    visitor.preorder(ast.parse(code), visitor)
    (graph,) = visitor.graphs.values()
    return graph.complexity()


def _function_body_nodes(code: str) -> list[ast.AST]:
    (function,) = ast.parse(code).body
    return [node for statement in function.body for node in ast.walk(statement)]


def _expected_gap_to_mccabe(code: str) -> int:
    """How much ours exceeds `mccabe`'s, construct by construct (the documented differences).

    `mccabe` builds a control-flow graph of statements only, so it never counts boolean operators,
    conditional expressions, comprehensions or `match` cases (+ for ours). Its `try` adds one
    path more than its handlers whether or not there is an `else` (ours: the `else` adds one), a
    loop's `else` adds nothing (ours: 1), and every nested function adds 1 (ours: 0).
    """
    gap = 0
    for node in _function_body_nodes(code):
        if isinstance(node, ast.BoolOp):
            gap += len(node.values) - 1
        elif isinstance(node, ast.IfExp):
            gap += 1
        elif isinstance(node, ast.comprehension):
            gap += 1 + len(node.ifs)
        elif isinstance(node, ast.Match):
            has_catch_all = any(
                isinstance(case.pattern, ast.MatchAs) and case.pattern.pattern is None
                for case in node.cases
            )
            gap += len(node.cases) - has_catch_all
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            gap += bool(node.orelse)
        elif isinstance(node, ast.Try):
            gap += bool(node.orelse) - 1
        elif isinstance(node, _TRY_STAR):  # mccabe sees a plain statement
            gap += len(node.handlers) + bool(node.orelse)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            gap -= 1
    return gap


_TRY_STAR = (ast.TryStar,) if hasattr(ast, "TryStar") else ()  # Python 3.11+


_STATEMENTS_MCCABE_COUNTS = (
    ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.FunctionDef, ast.AsyncFunctionDef
)


def _in_mccabe_blind_spot(code: str) -> bool:
    """Whether a `finally` block or a `match` holds a statement `mccabe` would count elsewhere.

    `mccabe` never looks inside `finally` blocks, `match` statements or `try ... except*`.
    """
    hidden_blocks = []
    for node in _function_body_nodes(code):
        if isinstance(node, ast.Try):
            hidden_blocks.extend(node.finalbody)
        elif isinstance(node, (ast.Match, *_TRY_STAR)):
            hidden_blocks.append(node)
    return any(
        isinstance(inner, _STATEMENTS_MCCABE_COUNTS)
        for block in hidden_blocks
        for inner in ast.walk(block)
    )


# (construct, code, ours, mccabe's)
CONSTRUCTS = [
    ("straight line", "def f(x):\n    y = x + 1\n    return y\n", 1, 1),
    ("if/elif/else", """
        def f(x):
            if x > 0:
                return 1
            elif x < 0:
                return -1
            else:
                return 0
        """, 3, 3),
    ("for", "def f(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n", 2, 2),
    ("for/else", """
        def f(xs):
            for x in xs:
                print(x)
            else:
                return 0
        """, 3, 2),
    ("while", "def f(n):\n    while n:\n        n -= 1\n    return n\n", 2, 2),
    ("async for", "async def f(xs):\n    async for x in xs:\n        print(x)\n", 2, 2),
    ("try/except/except", """
        def f(x):
            try:
                return int(x)
            except ValueError:
                return 0
            except TypeError:
                return -1
        """, 3, 4),
    ("try/except/else/finally", """
        def f(x):
            try:
                y = int(x)
            except ValueError:
                y = 0
            else:
                y += 1
            finally:
                print(x)
            return y
        """, 3, 3),
    ("try/finally", "def f(x):\n    try:\n        return x()\n    finally:\n        print(x)\n", 1, 2),
    ("boolean operators", "def f(a, b, c, d):\n    return a and b and c or d\n", 4, 1),
    ("conditional expression", "def f(a, b, c):\n    return a if c else b\n", 2, 1),
    ("comprehension", "def f(xss):\n    return [x for xs in xss for x in xs if x if x > 1]\n", 5, 1),
    ("match", """
        def f(command):
            match command:
                case "go":
                    return 1
                case "stop" | "halt":
                    return 2
                case _:
                    return 0
        """, 3, 1),
    ("with", "def f(path):\n    with open(path) as file:\n        return file.read()\n", 1, 1),
    ("assert", "def f(x):\n    assert x, 'x must be set'\n    return x\n", 1, 1),
    ("nested def", """
        def f(xs):
            def key(x):
                if x:
                    return 1
                return 0
            return sorted(xs, key=key)
        """, 2, 3),
    ("lambda", "def f():\n    return lambda x: 1 if x else 0\n", 2, 1),
]


@pytest.mark.parametrize(
    "code, ours, theirs", [case[1:] for case in CONSTRUCTS], ids=[case[0] for case in CONSTRUCTS]
)
def test_complexity_of_each_construct_against_mccabe(code, ours, theirs):
    code = _code(code)
    assert cyclomatic_complexity(code) == ours
    assert _mccabe_complexity(code) == theirs
    assert ours - theirs == _expected_gap_to_mccabe(code)


def test_complexity_hand_counted():
    code = _code(
        """
        def classify(values, limit=None if True else 0):  # defaults are not the body: +0
            result = []
            for value in values:                                 # +1
                if value is None or value < 0:                   # +1, or: +1
                    continue
                try:
                    result.append(int(value) if limit else value)  # +1
                except (TypeError, ValueError):                  # +1
                    pass
                except OverflowError:                            # +1
                    break
            else:                                                # +1
                return result
            return [r for r in result if r]                      # +1, if: +1
        """
    )
    assert cyclomatic_complexity(code) == 1 + 9
    assert _mccabe_complexity(code) == 1 + 1 + 1 + 3  # for, if, try with 2 handlers


def test_complexity_counts_nested_functions_and_classes():
    code = _code(
        """
        def outer(x):
            class Local:
                def method(self):
                    return x or self               # +1
            def inner(y):
                while y:                           # +1
                    y -= 1
            return Local() if x else inner(x)      # +1
        """
    )
    assert cyclomatic_complexity(code) == 4


def test_complexity_of_an_async_function_with_everything_flat():
    code = _code(
        """
        async def fetch(client, urls):
            async with client:                     # +0
                for url in urls:                   # +1
                    assert url                     # +0
                    if not url.startswith("http"): # +1
                        raise ValueError(url)
            return {url: 1 for url in urls}        # +1
        """
    )
    assert cyclomatic_complexity(code) == 4


def test_complexity_differs_from_mccabe_only_by_the_documented_constructs(stdlib_functions):
    compared = [code for code in stdlib_functions if not _in_mccabe_blind_spot(code)]
    assert len(compared) >= 0.9 * STDLIB_SAMPLE_SIZE
    mismatches = [
        code
        for code in compared
        if cyclomatic_complexity(code) - _mccabe_complexity(code) != _expected_gap_to_mccabe(code)
    ]
    assert not mismatches
    # The sample is not all trivial: it exercises the differences.
    assert sum(_expected_gap_to_mccabe(code) != 0 for code in compared) > 20


@pytest.mark.parametrize("value, expected", [(1, 1), (2, 2), (5, 5), (6, 6), (7, 6), (40, 6)])
def test_complexity_class(value, expected):
    assert complexity_class(value) == expected


def test_complexity_class_rejects_values_below_one():
    with pytest.raises(ValueError):
        complexity_class(0)


@pytest.mark.skipif(not hasattr(ast, "TryStar"), reason="except* is Python 3.11+")
def test_complexity_of_try_star():
    code = _code(
        """
        def f(x):
            try:
                x()
            except* ValueError:                    # +1
                pass
            except* TypeError:                     # +1
                pass
        """
    )
    assert cyclomatic_complexity(code) == 3
    assert _mccabe_complexity(code) == 1
    assert _expected_gap_to_mccabe(code) == 2
