"""Fresh names for the locals and functions a clone rewrite renames, in every language.

A rewrite draws new names from NAME_POOL in a seeded order, so that a clone is not given away by
its names; `NameSupply` hands out only names the function does not use yet.
"""

from __future__ import annotations

import builtins
import keyword
from collections.abc import Iterable

NAME_POOL = (
    "value", "item", "result", "data", "count", "index", "total", "key", "node", "name", "text",
    "obj", "element", "current", "temp", "entry", "target", "source", "buf", "acc", "flag",
    "size", "part", "piece", "arg", "param", "first", "second", "other", "out", "res", "val",
    "tmp", "elem", "pos", "offset", "start", "end", "limit", "line", "word", "char", "prefix",
    "suffix", "parts", "items", "values", "keys", "pairs", "mapping", "seen", "found", "left",
    "right", "low", "high", "step", "state", "info", "record", "field", "level", "n", "m", "k",
    "j", "x", "y", "z", "a", "b", "c", "s", "t", "u", "w", "p", "q", "r",
)  # fmt: skip
CONVENTIONAL_NAMES = frozenset({"self", "cls"})
# Never handed out: Python's builtins, keywords, `self` and `cls`. Java and Ruby rewrites avoid them
# too (most are ordinary names there, `print`, `hash`), which keeps their clone data as measured.
RESERVED_NAMES = frozenset({*dir(builtins), *keyword.kwlist, *keyword.softkwlist, *CONVENTIONAL_NAMES})


class NameSupply:
    """Identifiers used nowhere in the function and not RESERVED_NAMES."""

    def __init__(self, taken: set[str], candidates: Iterable[str] = (), fallback: str = "var"):
        self._taken = taken | RESERVED_NAMES
        self._candidates = iter(candidates)
        self._fallback = fallback
        self._counter = 0

    def take(self, name: str) -> bool:
        """Reserve `name` if it is free; whether it was."""
        if name in self._taken:
            return False
        self._taken.add(name)
        return True

    def fresh(self) -> str:
        """The next free candidate, or else the first free `{fallback}0`, `{fallback}1`, ..."""
        for name in self._candidates:
            if self.take(name):
                return name
        while not self.take(name := f"{self._fallback}{self._counter}"):
            self._counter += 1
        return name
