"""Semantics-preserving rewrites of one Python function through its AST: clones for clone detection.

`rewrite_function` always renames the function's local variables and parameters (and, given a
list of names, the function) and normalises the layout (`ast.unparse`: one quoting style, no
comments); it may also turn `for i in range(...)` loops into `while` loops, swap adjacent
independent assignments, swap the branches of an `if`/`else` (negating the test), and switch
between `x += 1` and `x = x + 1` where `x` can only hold immutable values. Each rewrite is
applied only where the rules below show that behaviour is kept, so the result is a true clone.
Names are left alone whenever in doubt: the analysis is per function, not a full scope resolver.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Iterable, Iterator, Sequence

from telly.data.language import Rewrite
from telly.data.names import CONVENTIONAL_NAMES, NAME_POOL, NameSupply

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef

# Scopes of their own inside a function: names they bind are never renamed (see _local_names).
_NESTED_SCOPES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.ClassDef,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
# Code that may run later than the statements around it, and so see a variable's later value.
_DEFERRED_CODE = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.GeneratorExp)
# Statements that can catch an exception and go on, making the order of assignments observable.
_EXCEPTION_HANDLERS = (ast.Try, ast.With, ast.AsyncWith) + (
    (ast.TryStar,) if hasattr(ast, "TryStar") else ()
)

# Names and attributes through which code can see its local variables by name.
_INTROSPECTION_NAMES = frozenset({"locals", "vars", "eval", "exec", "dir"})
_INTROSPECTION_ATTRIBUTES = frozenset({"f_locals", "_getframe", "currentframe"})

# Value nodes with no side effects on ordinary values; only assignments of these are reordered.
_PURE_NODES = (
    ast.Constant,
    ast.Name,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.Tuple,
    ast.List,
    ast.Set,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
    ast.expr_context,
)
_ARITHMETIC_UPDATES = (ast.Add, ast.Sub, ast.Mult)

REWRITE_KINDS = ("reorder", "swap_if", "augmented_assign", "for_to_while", "rename")


def rewrite_function(
    code: str,
    rng: random.Random,
    probability: float = 0.5,
    function_names: Sequence[str] = (),
) -> Rewrite | None:
    """A clone of the single function defined in `code`, or None if the result would not parse
    (or the function is nested too deeply to analyse).

    Local names are renamed and the layout normalised every time; every place where one of the
    other rewrites is safe is rewritten with `probability`, decided by `rng`. With
    `function_names`, the function also gets one of those names (one the function does not use),
    so that a clone cannot be told by its name. Calls inside it to its own name are left alone:
    they reach whatever that name refers to, as the original's do.
    """

    def chance() -> bool:
        return rng.random() < probability

    try:
        # Locals get placeholder names first, which gives the canonical form; the rewrites then
        # bind no new names but fresh ones, so that one analysis serves them all.
        tree, local_names, original_names = _canonicalised(code)
        canonical = _unparse_anonymous(tree)
        function = tree.body[0]
        # Walked once: until for->while, the rewrites only rearrange what the walk found.
        nodes = list(ast.walk(tree))
        # Not the original names either, so every local really gets a new name.
        names = NameSupply(original_names, rng.sample(NAME_POOL, len(NAME_POOL)))
        rewrites = (
            ("reorder", lambda: _reorder_independent_assignments(nodes, local_names, chance)),
            ("swap_if", lambda: _swap_if_branches(nodes, chance)),
            (
                "augmented_assign",
                lambda: _toggle_augmented_assignments(function, nodes, local_names, chance),
            ),
            (
                "for_to_while",
                lambda: _for_range_to_while(function, nodes, local_names, names, chance),
            ),
            ("rename", lambda: _rename(function, local_names, names, function_names, rng)),
        )
        applied = tuple(kind for kind, rewrite in rewrites if rewrite())
        if {"augmented_assign", "for_to_while"} & set(applied):
            ast.fix_missing_locations(tree)  # unparse reads the line numbers of new statements
        text = ast.unparse(tree)
        ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return None
    return Rewrite(text, function.name, applied, canonical)


def canonical_form(code: str) -> str:
    """The function named `_`, its renamable locals renamed in order of appearance, unparsed.

    Two functions with equal canonical forms differ only in their names, local names, layout and
    comments.
    """
    tree, _, _ = _canonicalised(code)
    return _unparse_anonymous(tree)


def _unparse_anonymous(tree: ast.Module) -> str:
    function = tree.body[0]
    name, function.name = function.name, "_"
    try:
        return ast.unparse(tree)
    finally:
        function.name = name


def _canonicalised(code: str) -> tuple[ast.Module, list[str], set[str]]:
    """The parsed function with its renamable locals renamed `_v0`, `_v1`, ..., those new names,
    and every name the original used."""
    tree = ast.parse(code)
    function = _single_function(tree)
    original_names = _identifiers(ast.walk(tree))
    placeholders = NameSupply(original_names, fallback="_v")
    return tree, _rename_locals(function, _local_names(function), placeholders), original_names


def _single_function(tree: ast.Module) -> _FunctionNode:
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise ValueError("expected the source of exactly one function")
    return tree.body[0]


def _identifiers(nodes: Iterable[ast.AST]) -> set[str]:
    """Every name the code binds, reads or declares (attribute names aside)."""
    found = set()
    for node in nodes:
        found.update(name for name, _ in _bindings(node))
        if isinstance(node, ast.Name):
            found.add(node.id)
    return found


# --- Which names are local, and renaming them


def _parameters(arguments: ast.arguments) -> list[ast.arg]:
    extra = [arg for arg in (arguments.vararg, arguments.kwarg) if arg is not None]
    return [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, *extra]


def _local_names(function: _FunctionNode) -> list[str]:
    """The function's own locals that can be renamed everywhere, in order of first binding.

    A name qualifies when the function binds it only as a parameter, by assignment (or `del`) or
    in `except ... as`, and nothing else binds or declares it: not a nested function, class,
    lambda or comprehension (such names are left alone rather than tracked scope by scope), an
    import, `global`/`nonlocal`, a `match` pattern, nor a keyword argument of a call to a function
    of the same name (a recursive `f(n=...)` needs the parameter's name). `self` and `cls` keep
    their conventional names. A function that could look its locals up by name (`locals()`,
    `eval`, frames, ...) has none.
    """
    analysis = _BindingAnalysis(function.name)
    analysis.own.update(dict.fromkeys(arg.arg for arg in _parameters(function.args)))
    for statement in function.body:
        analysis.visit(statement, nested=False)
    if analysis.introspective:
        return []
    kept = analysis.blocked | CONVENTIONAL_NAMES
    return [name for name in analysis.own if name not in kept]


class _BindingAnalysis:
    def __init__(self, function_name: str):
        self.function_name = function_name
        self.own: dict[str, None] = {}  # an ordered set
        self.blocked: set[str] = set()
        self.introspective = False

    def visit(self, node: ast.AST, nested: bool) -> None:
        nested = nested or isinstance(node, _NESTED_SCOPES)
        for name, plain in _bindings(node):
            if plain and not nested:
                self.own.setdefault(name)
            else:
                self.blocked.add(name)
        if isinstance(node, ast.Name):
            self.introspective |= node.id in _INTROSPECTION_NAMES
        elif isinstance(node, ast.Attribute):
            self.introspective |= node.attr in _INTROSPECTION_ATTRIBUTES
        elif isinstance(node, ast.Call) and _calls_function_named(node, self.function_name):
            self.blocked.update(argument.arg for argument in node.keywords if argument.arg)
        for child in ast.iter_child_nodes(node):
            self.visit(child, nested)


_BINDING_NODES = (
    ast.Name,
    ast.ExceptHandler,
    ast.arg,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.alias,
    ast.Global,
    ast.Nonlocal,
    ast.MatchAs,
    ast.MatchStar,
    ast.MatchMapping,
)


def _bindings(node: ast.AST) -> list[tuple[str, bool]]:
    """`(name, plain)` for each name `node` binds; plain: an assignment, `del` or `except as`."""
    if not isinstance(node, _BINDING_NODES):
        return []  # most nodes; checked first because this runs on every node
    if isinstance(node, ast.Name):
        return [] if isinstance(node.ctx, ast.Load) else [(node.id, True)]
    if isinstance(node, ast.ExceptHandler):
        return [(node.name, True)] if node.name else []
    if isinstance(node, ast.arg):
        return [(node.arg, False)]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [(node.name, False)]
    if isinstance(node, ast.alias):
        return [((node.asname or node.name).split(".")[0], False)]
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return [(name, False) for name in node.names]
    name = node.rest if isinstance(node, ast.MatchMapping) else node.name
    return [(name, False)] if name else []


def _calls_function_named(call: ast.Call, name: str) -> bool:
    called = call.func
    return (isinstance(called, ast.Name) and called.id == name) or (
        isinstance(called, ast.Attribute) and called.attr == name
    )


class _RenameNames(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        if node.name:
            node.name = self.mapping.get(node.name, node.name)
        self.generic_visit(node)
        return node


def _rename(
    function: _FunctionNode,
    local_names: list[str],
    names: NameSupply,
    function_names: Sequence[str],
    rng: random.Random,
) -> bool:
    """Rename the locals and, if one of `function_names` is free, the function itself."""
    renamed = bool(_rename_locals(function, local_names, names))
    start = rng.randrange(len(function_names)) if function_names else 0
    for offset in range(len(function_names)):  # usually ends at once: most names are free
        name = function_names[(start + offset) % len(function_names)]
        if names.take(name):
            function.name = name
            return True
    return renamed


def _rename_locals(
    function: _FunctionNode, local_names: list[str], names: NameSupply
) -> list[str]:
    """Give each of `local_names` a fresh name; return the new names, in the same order.

    Decorators, defaults and annotations of the function itself are evaluated outside it, so
    they are not touched.
    """
    mapping = {name: names.fresh() for name in local_names}
    for arg in _parameters(function.args):
        arg.arg = mapping.get(arg.arg, arg.arg)
    renamer = _RenameNames(mapping)
    function.body = [renamer.visit(statement) for statement in function.body]
    return list(mapping.values())


# --- for i in range(...) -> while


def _for_range_to_while(
    function: _FunctionNode,
    nodes: list[ast.AST],
    local_names: list[str],
    names: NameSupply,
    chance,
) -> bool:
    """`for i in range(a, b): body` -> `i = a` / `while i < b: body; i += 1`, where that is safe.

    Safe: `range` is the builtin called with one or two plain arguments, the loop has no `else`
    and no `break`/`continue` of its own, and `i` is a local that appears nowhere but as this
    loop's target and read in its body (not in a nested scope, which could see its final value).
    `b` is kept in the test if it is a number or a local the body never assigns, else computed
    once before the loop, like `range` does.
    """
    has_range_loop = any(
        isinstance(node, ast.For) and _is_plain_range_call(node.iter) for node in nodes
    )
    if not has_range_loop or _binds(nodes, "range"):
        return False
    rewriter = _ForToWhile(function, set(local_names), names, chance)
    rewriter.visit(function)
    return rewriter.changed


def _is_plain_range_call(node: ast.expr) -> bool:
    """`range(b)` or `range(a, b)`: no step, keywords or `*args`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and len(node.args) in (1, 2)
        and not node.keywords
        and not any(isinstance(arg, ast.Starred) for arg in node.args)
    )


def _binds(nodes: Iterable[ast.AST], name: str) -> bool:
    """Whether `name` is bound or declared by any of `nodes`."""
    return any(bound == name for node in nodes for bound, _ in _bindings(node))


class _ForToWhile(ast.NodeTransformer):
    def __init__(self, function, local_names: set[str], names: NameSupply, chance):
        self.function = function
        self.local_names = local_names
        self.names = names
        self.chance = chance
        self.changed = False

    def visit_For(self, node: ast.For) -> ast.stmt | list[ast.stmt]:
        self.generic_visit(node)
        if not (self._safe_to_rewrite(node) and self.chance()):
            return node
        self.changed = True
        variable = node.target.id
        arguments = node.iter.args
        start = arguments[0] if len(arguments) == 2 else ast.Constant(0)
        stop, before_loop = arguments[-1], []
        if not self._stable_in_loop(stop, node):
            stop_name = self.names.fresh()
            before_loop = [_assign(stop_name, stop)]
            stop = ast.Name(stop_name, ast.Load())
        test = ast.Compare(ast.Name(variable, ast.Load()), [ast.Lt()], [stop])
        step = ast.AugAssign(ast.Name(variable, ast.Store()), ast.Add(), ast.Constant(1))
        loop = ast.While(test, [*node.body, step], [])
        return [_assign(variable, start), *before_loop, loop]

    def _safe_to_rewrite(self, node: ast.For) -> bool:
        if not (
            isinstance(node.target, ast.Name)
            and node.target.id in self.local_names
            and not node.orelse
            and _is_plain_range_call(node.iter)
        ):
            return False
        if _has_own_jump(node.body):
            return False
        variable = node.target.id
        uses_in_function = _occurrences(self.function, variable)
        reads_in_body = [
            name
            for name in _eager_nodes(node.body)
            if isinstance(name, ast.Name) and name.id == variable and isinstance(name.ctx, ast.Load)
        ]
        # Any other use (an assignment in the body, a read after the loop or in a closure, a
        # parameter, `except ... as i`) could see the loop variable's final value, which differs.
        return uses_in_function == 1 + len(reads_in_body)

    def _stable_in_loop(self, stop: ast.expr, node: ast.For) -> bool:
        if isinstance(stop, ast.Constant) and type(stop.value) is int:
            return True
        return (
            isinstance(stop, ast.Name)
            and stop.id in self.local_names
            and not _binds(_walk_all(node.body), stop.id)
        )


def _assign(name: str, value: ast.expr) -> ast.Assign:
    return ast.Assign([ast.Name(name, ast.Store())], value)


def _occurrences(function: _FunctionNode, name: str) -> int:
    """How many times `name` is read, assigned or bound anywhere in the function."""
    count = 0
    for node in ast.walk(function):
        if isinstance(node, ast.Name):
            count += node.id == name
        else:
            count += sum(bound == name for bound, _ in _bindings(node))
    return count


def _walk_all(statements: list[ast.stmt]) -> Iterator[ast.AST]:
    return (node for statement in statements for node in ast.walk(statement))


def _eager_nodes(statements: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of `statements` that runs when they run (not inside a function, lambda, class
    or generator expression, which may run later)."""
    pending = list(statements)
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, _DEFERRED_CODE):
            pending.extend(ast.iter_child_nodes(node))


def _has_own_jump(statements: Iterable[ast.AST]) -> bool:
    """Whether a `break` or `continue` in `statements` belongs to the loop they are the body of."""
    for node in statements:
        if isinstance(node, (ast.Break, ast.Continue)):
            return True
        if isinstance(node, _LOOPS):
            # An inner loop's body has its own jumps, but its `else` runs in this loop.
            children = node.orelse
        elif isinstance(node, (*_NESTED_SCOPES, ast.expr)):  # jumps are statements
            continue
        else:
            children = ast.iter_child_nodes(node)
        if _has_own_jump(children):
            return True
    return False


# --- Reordering, if/else, augmented assignments


def _reorder_independent_assignments(
    nodes: list[ast.AST], local_names: list[str], chance
) -> bool:
    """Swap adjacent `a = ...` / `b = ...` of locals whose values are side-effect free and that
    neither write what the other reads or writes.

    Not in functions with `try` or `with`: if the first value raised and the exception were
    caught, the handler could see whether the other assignment had happened.
    """
    if any(isinstance(node, _EXCEPTION_HANDLERS) for node in nodes):
        return False
    local_names = set(local_names)
    changed = False
    for statements in _statement_lists(nodes):
        index = 0
        while index < len(statements) - 1:
            first, second = statements[index], statements[index + 1]
            if _independent(first, second, local_names) and chance():
                statements[index], statements[index + 1] = second, first
                changed = True
                index += 2  # each statement moves at most once
            else:
                index += 1
    return changed


def _statement_lists(nodes: list[ast.AST]) -> Iterator[list[ast.stmt]]:
    for node in nodes:
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if isinstance(statements, list):
                yield statements


def _independent(first: ast.stmt, second: ast.stmt, local_names: set[str]) -> bool:
    effects = [_pure_assignment_effects(statement) for statement in (first, second)]
    if None in effects:
        return False
    (first_writes, first_reads), (second_writes, second_reads) = effects
    if not (first_writes | second_writes) <= local_names:
        return False  # a global's new value would outlive an exception from the other value
    return not (first_writes & (second_writes | second_reads) or second_writes & first_reads)


def _pure_assignment_effects(statement: ast.stmt) -> tuple[set[str], set[str]] | None:
    """(names written, names read) of `name = value` with a side-effect free value, else None."""
    if not (
        isinstance(statement, ast.Assign)
        and all(isinstance(target, ast.Name) for target in statement.targets)
        and all(isinstance(node, _PURE_NODES) for node in ast.walk(statement.value))
    ):
        return None
    reads = {node.id for node in ast.walk(statement.value) if isinstance(node, ast.Name)}
    return {target.id for target in statement.targets}, reads


def _swap_if_branches(nodes: list[ast.AST], chance) -> bool:
    """`if c: A else: B` -> `if not c: B else: A`, and `if not c: A else: B` -> `if c: B else: A`.

    Both forms evaluate the truth of `c` exactly once.
    """
    changed = False
    for node in nodes:
        if isinstance(node, ast.If) and node.orelse and chance():
            test = node.test
            negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
            node.test = test.operand if negated else ast.UnaryOp(ast.Not(), test)
            node.body, node.orelse = node.orelse, node.body
            changed = True
    return changed


def _toggle_augmented_assignments(
    function: _FunctionNode, nodes: list[ast.AST], local_names: list[str], chance
) -> bool:
    """`x += 1` <-> `x = x + 1` (also `-=` and `*=`), for a number literal and a local `x` that
    can only hold immutable values.

    On a mutable value the two differ: `items *= 2` extends the caller's list in place, while
    `items = items * 2` binds a new list and leaves the caller's alone (numpy arrays likewise).
    """
    immutable = _immutable_locals(function, nodes, local_names)
    changed = False
    for statements in _statement_lists(nodes):
        for index, statement in enumerate(statements):
            toggled = _toggled_update(statement, immutable)
            if toggled is not None and chance():
                statements[index] = toggled
                changed = True
    return changed


def _toggled_update(statement: ast.stmt, immutable: set[str]) -> ast.stmt | None:
    if isinstance(statement, ast.AugAssign):
        target, op, value = statement.target, statement.op, statement.value
        if _is_name_update(target, op, value, immutable):
            return _assign(target.id, ast.BinOp(ast.Name(target.id, ast.Load()), op, value))
    elif isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target, value = statement.targets[0], statement.value
        if (
            isinstance(value, ast.BinOp)
            and isinstance(value.left, ast.Name)
            and value.left.id == getattr(target, "id", None)
            and _is_name_update(target, value.op, value.right, immutable)
        ):
            return ast.AugAssign(ast.Name(target.id, ast.Store()), value.op, value.right)
    return None


def _is_name_update(target: ast.expr, op: ast.operator, value: ast.expr, immutable: set[str]) -> bool:
    return (
        isinstance(target, ast.Name)
        and target.id in immutable
        and isinstance(op, _ARITHMETIC_UPDATES)
        and isinstance(value, ast.Constant)
        and type(value.value) in (int, float)
    )


def _immutable_locals(function: _FunctionNode, nodes: list[ast.AST], local_names: list[str]) -> set[str]:
    """The locals that can only ever hold a number, string, bytes, tuple, bool or None.

    Such a local is not a parameter, and every binding of it is `x = v`, `x: T = v` or `x op= v`
    with `v` built of constants and tuples by arithmetic, reading no name but `x` itself
    (`x = 0`, `x = x * 2`, `x += 1`). None of these types has an in-place operator, so whatever
    `x` held before, it holds one of them after; any other binding (a loop, `with`, `except`,
    unpacking, `:=`, `del`) leaves the name out.
    """
    candidates = set(local_names) - {arg.arg for arg in _parameters(function.args)}
    immutable_bindings = set()  # ids of the target nodes of the bindings described above
    for node in nodes:
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            immutable_bindings.update(
                id(target)
                for target in targets
                if isinstance(target, ast.Name) and _immutable_value(node.value, target.id)
            )
    for node in nodes:
        for name, _ in _bindings(node):
            if id(node) not in immutable_bindings:
                candidates.discard(name)
    return candidates


def _immutable_value(value: ast.expr, name: str) -> bool:
    """Whether `value` is a constant, a tuple, or arithmetic on such values and the name `name`
    (assumed to hold one itself): builtin arithmetic on them gives one of them again, or raises."""
    if isinstance(value, (ast.Constant, ast.Tuple)):
        return True
    if isinstance(value, ast.Name):
        return value.id == name
    if isinstance(value, ast.UnaryOp):
        return _immutable_value(value.operand, name)
    if isinstance(value, ast.BinOp):
        return _immutable_value(value.left, name) and _immutable_value(value.right, name)
    return False
