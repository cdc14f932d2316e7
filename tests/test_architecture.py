"""What DESIGN.md promises of the loop and the tasks, checked on the source: the loop reads top to
bottom, and tasks never place tensors on a device (the loop does). The layering: test_imports.py."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "telly"


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
