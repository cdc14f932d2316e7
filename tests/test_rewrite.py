"""Rewrites of functions for clone detection: always valid Python, always the same behaviour."""

import ast
import copy
import random
import symtable
import textwrap

import numpy as np
import pytest

from telly.data.rewrite import canonical_form, rewrite_function

SEEDS = range(12)


def source(text):
    return textwrap.dedent(text).strip("\n")


WEIGHTED_MEAN = source('''
    def weighted_mean(values, weights, start=0):
        # a comment that the rewrite drops
        total = start
        count = 0
        for i in range(len(values)):
            total += values[i] * weights[i]
            count = count + 1
        if not count:
            return None
        else:
            return total / count
''')

TABLE = source('''
    def table(n, m):
        rows = []
        for i in range(1, n):
            row = []
            for j in range(m):
                row.append(i * j + n)
            rows.append(row)
        width = 2
        height = n * 3
        return rows, width, height
''')

CLASSIFY = source('''
    def classify(x, limit=10):
        double = x * 2
        below = limit - 1
        if x > limit:
            label = "big"
        elif x < 0:
            label = "negative"
        else:
            label = "small"
        if not (x % 2 == 0 or x > 100):
            label += "!"
        else:
            label = label.upper()
        extra = double + below
        extra -= 3
        return label, extra
''')

CLOSURE = source('''
    def make_counter(step, times):
        count = 0
        def advance():
            nonlocal count
            count += step
            return count
        seen = [advance() for _ in range(times)]
        ordered = sorted(seen, key=lambda v: -v * step)
        try:
            first = seen[0]
        except IndexError as error:
            first = str(error)
        return seen, ordered, first
''')

# Calls another function by keyword, reads a global, a builtin and an attribute.
USES_OUTSIDE_NAMES = source('''
    def scaled(self, items, key=None):
        result = []
        for item in items:
            result.append(self.factor * SCALE * len(item))
        return sorted(result, key=key), helper(value=result)
''')

CASES = [
    (WEIGHTED_MEAN, [([1, 2, 3], [1, 1, 2]), ([], []), ([5], [2], 1)]),
    (TABLE, [(1, 1), (3, 2), (4, 0), (5, 3)]),
    (CLASSIFY, [(3,), (12,), (-4,), (11, 20), (200,), (101, 50)]),
    (CLOSURE, [(1, 3), (2, 0), (5, 4)]),
]


class Scaler:
    factor = 2


def helper(value):
    return [v + 1 for v in value]


def run(code, *arguments):
    namespace = {"SCALE": 3, "helper": helper}
    exec(code, namespace)
    [name] = [name for name in namespace if name not in ("SCALE", "helper", "__builtins__")]
    return namespace[name](*arguments)


def rewrites(code, probability=0.5):
    return [rewrite_function(code, random.Random(seed), probability) for seed in SEEDS]


def global_names(code):
    """The global and builtin names the function (and functions nested in it) use."""
    names = set()
    pending = symtable.symtable(code, "<code>", "exec").get_children()
    while pending:
        table = pending.pop()
        names.update(symbol.get_name() for symbol in table.get_symbols() if symbol.is_global())
        pending.extend(table.get_children())
    return names


@pytest.mark.parametrize("probability", [0.5, 1.0])
@pytest.mark.parametrize("code, inputs", CASES)
def test_rewrites_parse_and_behave_like_the_original(code, inputs, probability):
    for rewrite in rewrites(code, probability):
        assert rewrite is not None
        ast.parse(rewrite.code)
        assert rewrite.code != code
        assert "rename" in rewrite.applied
        for arguments in inputs:
            assert run(rewrite.code, *arguments) == run(code, *arguments), rewrite.code


def test_every_kind_of_rewrite_happens():
    applied = {kind for code, _ in CASES for rewrite in rewrites(code) for kind in rewrite.applied}
    assert applied == {"rename", "for_to_while", "reorder", "swap_if", "augmented_assign"}
    assert "# a comment" not in rewrites(WEIGHTED_MEAN)[0].code


def test_renaming_leaves_globals_builtins_attributes_and_keywords_alone():
    original_locals = {"items", "key", "result", "item"}
    for rewrite in rewrites(USES_OUTSIDE_NAMES, probability=1.0):
        tree = ast.parse(rewrite.code)
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert {"SCALE", "len", "sorted", "helper", "self"} <= names
        assert not names & original_locals  # every local got a new name
        keywords = {node.arg for node in ast.walk(tree) if isinstance(node, ast.keyword)}
        assert keywords == {"key", "value"}
        assert any(isinstance(n, ast.Attribute) and n.attr == "factor" for n in ast.walk(tree))
        assert global_names(rewrite.code) == global_names(USES_OUTSIDE_NAMES)
        items = [[1, 2], [3], []]
        assert run(rewrite.code, Scaler(), items) == run(USES_OUTSIDE_NAMES, Scaler(), items)


def test_the_function_takes_a_name_it_does_not_use():
    names = ["helper", "scaled", "len", "rescale"]  # used inside, its own, a builtin, free
    for seed in SEEDS:
        rewrite = rewrite_function(USES_OUTSIDE_NAMES, random.Random(seed), function_names=names)
        assert rewrite.code.startswith("def rescale(self, ")
    assert rewrite_function(USES_OUTSIDE_NAMES, random.Random(0)).code.startswith("def scaled(")


def test_no_fresh_name_captures_a_global_or_a_closure():
    # Likely fresh names are used here as globals, so renaming must avoid them.
    code = source('''
        def f(a):
            b = value + item + result + data + count + index + total + key + node + name
            return a + b
    ''')
    for code_under_test in (code, CLOSURE):
        for rewrite in rewrites(code_under_test, probability=1.0):
            assert global_names(rewrite.code) == global_names(code_under_test), rewrite.code


@pytest.mark.parametrize(
    "code",
    [
        # break or continue of the loop itself
        "def f(n):\n    s = 0\n    for i in range(n):\n        if i > 3:\n            break\n"
        "        s += i\n    return s",
        "def f(n):\n    s = 0\n    for i in range(n):\n        if i % 2:\n            continue\n"
        "        s += i\n    return s",
        # the loop variable read after the loop, or assigned in the body
        "def f(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s + i",
        "def f(n):\n    s = 0\n    for i in range(n):\n        i = i * 2\n        s += i\n"
        "    return s",
        # a closure in the body sees the final value later
        "def f(n):\n    fs = []\n    for i in range(n):\n        fs.append(lambda: i)\n"
        "    return [g() for g in fs]",
        # range is not the builtin, or has a step; an else clause
        "def f(n, range=range):\n    s = 0\n    for i in range(n):\n        s += i\n    return s",
        "def f(n):\n    s = 0\n    for i in range(0, n, 2):\n        s += i\n    return s",
        "def f(n):\n    s = 0\n    for i in range(n):\n        s += i\n    else:\n"
        "        s = -s\n    return s",
    ],
)
def test_for_loops_are_rewritten_only_when_safe(code):
    for rewrite in rewrites(code, probability=1.0):
        assert "while" not in rewrite.code, rewrite.code
        for n in (1, 5, 8):
            assert run(rewrite.code, n) == run(code, n)


def test_a_break_in_an_inner_loop_does_not_block_the_outer_loop():
    code = source('''
        def f(n, limit):
            s = 0
            for i in range(n):
                for j in range(n):
                    if j > limit:
                        break
                    s += i * j
            return s
    ''')
    rewrite = rewrite_function(code, random.Random(0), probability=1.0)
    assert rewrite.code.count("while") == 1 and "break" in rewrite.code
    for arguments in [(0, 1), (4, 2), (6, 10)]:
        assert run(rewrite.code, *arguments) == run(code, *arguments)


def test_range_bound_that_changes_in_the_loop_is_computed_once():
    code = source('''
        def f(items):
            out = []
            for i in range(len(items)):
                items.append(i)
                out.append(items[i])
            return out
    ''')
    rewrite = rewrite_function(code, random.Random(0), probability=1.0)
    assert "while" in rewrite.code
    assert run(rewrite.code, [1, 2, 3]) == run(code, [1, 2, 3]) == [1, 2, 3]


def test_assignments_with_calls_or_in_try_blocks_keep_their_order():
    calls = source('''
        def f(log):
            a = log.append(1)
            b = log.append(2)
            return a, b
    ''')
    guarded = source('''
        def g(x):
            first = 0
            try:
                second = 10 / x
                first = 1
            except ZeroDivisionError:
                return first
            return second
    ''')
    for code in (calls, guarded):
        for rewrite in rewrites(code, probability=1.0):
            assert "reorder" not in rewrite.applied
    for rewrite in rewrites(calls, probability=1.0):
        log = []
        run(rewrite.code, log)
        assert log == [1, 2]


@pytest.mark.parametrize(
    "code, argument",
    [
        # `*=` extends the caller's list in place; `items = items * 2` would bind a new list.
        ("def f(items):\n    items *= 2\n    return len(items)", [1, 2]),
        ("def f(items):\n    items = items * 2\n    return len(items)", [1, 2]),
        # A local that holds the argument, or was a number before it did.
        ("def f(items):\n    alias = 0\n    alias = items\n    alias *= 2\n    return len(alias)", [1, 2]),
        ("def f(items):\n    for alias in [items]:\n        alias *= 2\n    return len(alias)", [1, 2]),
        # numpy arrays update in place for `+=` and `-=` too.
        ("def f(values):\n    values += 1\n    return int(values.sum())", np.array([1, 2])),
        ("def f(values):\n    copy = values\n    copy -= 1\n    return int(copy.sum())", np.array([1, 2])),
    ],
)
def test_updates_of_values_that_may_be_mutable_are_kept(code, argument):
    for rewrite in rewrites(code, probability=1.0):
        original_argument, rewritten_argument = copy.deepcopy(argument), copy.deepcopy(argument)
        assert run(rewrite.code, rewritten_argument) == run(code, original_argument)
        assert np.array_equal(rewritten_argument, original_argument), rewrite.code  # the caller's value
        assert "augmented_assign" not in rewrite.applied, rewrite.code


def test_updates_of_numbers_strings_and_tuples_are_toggled():
    code = source("""
        def f(items, n):
            count = 0
            scale = 1.5
            label = "x" + "y"
            pair = (n, items)
            for item in items:
                count += 1
                scale = scale * 2
                label *= 2
                pair = pair * 2
            return count, scale, label, len(pair)
    """)
    for rewrite in rewrites(code, probability=1.0):
        # The loop's body was `+=`, `= *`, `*=`, `= *`: every update is toggled.
        loop = next(node for node in ast.walk(ast.parse(rewrite.code)) if isinstance(node, ast.For))
        assert [type(statement) for statement in loop.body] == [ast.Assign, ast.AugAssign] * 2, rewrite.code
        items = [1, 2, 3]
        assert run(rewrite.code, items, 4) == run(code, items, 4) == (3, 12.0, "xy" * 8, 16)


def test_functions_that_look_up_locals_by_name_keep_them():
    code = "def f(a, b):\n    c = a + b\n    return locals()"
    for rewrite in rewrites(code):
        assert run(rewrite.code, 1, 2) == {"a": 1, "b": 2, "c": 3}


def test_recursive_keyword_call_keeps_the_parameter_name():
    code = source("""
        def fact(n, acc=1):
            if n <= 1:
                return acc
            return fact(n - 1, acc=acc * n)
    """)
    for rewrite in rewrites(code, probability=1.0):
        assert run(rewrite.code, 5) == 120
        assert "acc=" in rewrite.code


def test_canonical_form_ignores_names_layout_and_comments():
    first = "def f(a, b):\n    # add\n    total = a + b\n    return total"
    second = "def g(x,\n      y):\n    s = x + y  # sum\n    return s"
    third = "def f(x, y):\n    s = x - y\n    return s"
    assert canonical_form(first) == canonical_form(second) != canonical_form(third)
    assert rewrite_function(first, random.Random(0)).original_canonical_form == canonical_form(
        first
    )


def test_same_seed_same_rewrite():
    assert rewrites(CLASSIFY) == rewrites(CLASSIFY)
    assert len({rewrite.code for rewrite in rewrites(CLASSIFY)}) > 1
