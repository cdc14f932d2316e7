"""Layers point down, and the command line stays light: checked on the source and in a fresh process."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import telly

TELLY = Path(telly.__file__).parent
# What the data layer may import of telly (DESIGN.md: models/data -> metrics/files).
BELOW_DATA = ("telly.data", "telly.errors", "telly.files", "telly.metrics")
HEAVY = ("torch", "transformers", "sklearn")


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


def module_of(name: str) -> str | None:
    """The telly module a name imported by `telly_imports` lives in (the name itself, or its parent)."""
    for candidate in (name, name.rpartition(".")[0]):
        path = TELLY.parent.joinpath(*candidate.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return candidate
    return None


def source_of(module: str) -> Path:
    path = TELLY.parent.joinpath(*module.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def reachable(module: str) -> set[str]:
    """Every telly module `module` imports, directly or through others (lazy imports too)."""
    seen, todo = set(), [module]
    while todo:
        for _, name in telly_imports(source_of(todo.pop())):
            found = module_of(name)
            if found and found not in seen:
                seen.add(found)
                todo.append(found)
    return seen


@pytest.mark.parametrize("lower", ["telly.train", "telly.run_folder", "telly.runtime", "telly.tasks.base",
                                   "telly.models.cache"])
def test_the_loop_and_what_it_stands_on_never_import_upward(lower):
    upper = ("telly.study", "telly.pipeline", "telly.cli", "telly.sweep", "telly.report")
    upward = sorted(name for name in reachable(lower) if any(name == u or name.startswith(u + ".") for u in upper))
    assert upward == [], f"{lower} reaches {upward}"


def test_train_and_study_form_no_cycle():
    assert not any(name.startswith("telly.study") for name in reachable("telly.train"))
    assert "telly.train" in reachable("telly.study.recommend")  # the study stands on the loop, not the reverse


def test_no_module_imports_a_private_name_of_another():
    private = [
        f"{path.relative_to(TELLY)}:{line} imports {name}"
        for path in sorted(TELLY.rglob("*.py"))
        for line, name in telly_imports(path)
        if name.rsplit(".", 1)[-1].startswith("_")
    ]
    assert private == []


def modules_after_cli(argv: list[str]) -> set[str]:
    """The modules a fresh Python has imported after `telly argv` (which must succeed)."""
    script = (
        "import json, sys\nfrom telly.cli import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as done:  # --help\n    code = done.code\n"
        "assert code == 0, code\nprint(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_help_and_data_build_import_no_model_library(tmp_path):
    sources = tmp_path / "src"
    sources.mkdir()
    for name in ("a", "b", "c"):
        (sources / f"{name}.py").write_text(f'def {name}(x):\n    """Return the value {name} gives."""\n    return x\n')
    for argv in (["--help"], ["data", "build", "--help"], ["data", "build", str(sources), "--out", str(tmp_path / "out")]):
        modules = modules_after_cli(argv)
        assert "telly.cli" in modules
        assert [module for module in HEAVY if module in modules] == [], argv
    assert (tmp_path / "out" / "test.jsonl").read_text().count("\n") == 1  # the build did run
