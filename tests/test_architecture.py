"""The layering DESIGN.md promises, checked on the source: the loop never reaches up into the study or
the commands, tasks never place tensors on a device, and the loop reads top to bottom."""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SOURCE / "telly"


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(module: str) -> set[str]:
    """telly modules that `module` imports anywhere in its text (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for name in imported(todo.pop()) - seen:
            seen.add(name)
            todo.append(name)
    return seen


@pytest.mark.parametrize("lower", ["telly.train", "telly.run_folder", "telly.runtime", "telly.tasks.base",
                                   "telly.models.cache"])
def test_the_loop_and_what_it_stands_on_never_import_upward(lower):
    upper = {"telly.study", "telly.pipeline", "telly.cli", "telly.sweep", "telly.report"}
    upward = {name for name in reachable(lower) if any(name == u or name.startswith(u + ".") for u in upper)}
    assert not upward, f"{lower} reaches {sorted(upward)}"


def test_train_and_study_form_no_cycle():
    assert not any(name.startswith("telly.study") for name in reachable("telly.train"))
    assert "telly.train" in reachable("telly.study.recommend")  # the study stands on the loop, not the reverse


def test_no_function_in_the_loop_is_longer_than_about_fifty_lines():
    tree = ast.parse((PACKAGE / "train.py").read_text(encoding="utf-8"))
    lengths = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert lengths and max(lengths.values()) <= 50, sorted(lengths.items(), key=lambda item: -item[1])[:3]


def moves_to_a_device(call: ast.Call) -> bool:
    """`.cuda()`, `.cpu()`, or a `.to(...)` that is not only a dtype cast (`.to(x.dtype)`, `.to(torch.float32)`)."""
    if not isinstance(call.func, ast.Attribute) or call.func.attr not in {"to", "cuda", "cpu"}:
        return False
    if call.func.attr != "to":
        return True
    dtype_only = all(isinstance(arg, ast.Attribute) and (arg.attr == "dtype" or getattr(arg.value, "id", "") == "torch")
                     for arg in call.args) and all(keyword.arg == "dtype" for keyword in call.keywords)
    return not dtype_only


@pytest.mark.parametrize("path", sorted((PACKAGE / "tasks").glob("*.py")), ids=lambda path: path.name)
def test_tasks_never_place_tensors_on_a_device(path):
    """Tasks build CPU tensors; the loop and `Runtime.infer` move them (tensors made from model
    outputs take their device with `device=`/`new_*`)."""
    moves = [node.lineno for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and moves_to_a_device(node)]
    assert not moves, f"{path.name} moves tensors at lines {moves}"


def test_the_device_check_sees_a_move():
    calls = [ast.parse(text).body[0].value for text in ("x.to(device)", "x.cuda()", "x.to(x.dtype)", "x.to(torch.float16)")]
    assert [moves_to_a_device(call) for call in calls] == [True, True, False, False]
