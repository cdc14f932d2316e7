"""Layers point down: checked on the source."""

import ast
from pathlib import Path

import telly

TELLY = Path(telly.__file__).parent
# What the data layer may import of telly (DESIGN.md: models/data -> metrics/files).
BELOW_DATA = ("telly.data", "telly.errors", "telly.files", "telly.metrics")


def telly_imports(path: Path):
    """`(line, module)` for every telly module or name `path` imports (lazy imports too); a name
    imported from a module is `module.name`."""
    package = ".".join(path.relative_to(TELLY.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, `level - 1` packages up
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        yield from ((node.lineno, name) for name in names if name == "telly" or name.startswith("telly."))


def test_the_data_layer_imports_nothing_above_it():
    upward = [
        f"{path.relative_to(TELLY)}:{line} imports {name}"
        for path in sorted((TELLY / "data").rglob("*.py"))
        for line, name in telly_imports(path)
        if not any(name == allowed or name.startswith(allowed + ".") for allowed in BELOW_DATA)
    ]
    assert upward == []


def test_no_module_imports_a_private_name_of_another():
    private = [
        f"{path.relative_to(TELLY)}:{line} imports {name}"
        for path in sorted(TELLY.rglob("*.py"))
        for line, name in telly_imports(path)
        if name.rsplit(".", 1)[-1].startswith("_")
    ]
    assert private == []
