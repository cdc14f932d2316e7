"""Code generation (CONCODE-style) and line completion (CodeXGLUE-style) data from Python."""

import ast
import re

import pytest

from telly.data.formats import read_concode, read_line_completion
from telly.data.generation import build_code_generation, build_line_completion
from telly.data.corpus import SPLITS
from telly.errors import UserError

FILES = 20

# Written the way ast.unparse writes code, so its lines can be compared with the records.
SPECIAL = '''\
import math


def placeholder():
    """This function does nothing yet."""


def undocumented(x):
    y = x + 1
    return y


class Circle:

    def circumference(self, scale=1) -> float:
        """Compute the circumference of the circle.

        Uses pi from the math module.
        """
        # this comment is not part of the code
        total = 2 * math.pi * self.radius
        if scale != 1:
            total = total * scale
        return total
'''


def function_source(number):
    extra = "".join(f"    result.append({step})\n" for step in range(number % 4))
    return (
        f"def scale_{number}(values, factor={number}):\n"
        f'    """Scale every value by the factor {number}."""\n'
        f"    result = []\n"
        f"    for value in values:\n"
        f"        result.append(value * factor)\n"
        f"{extra}"
        f"    return result\n"
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("generation") / "src"
    root.mkdir()
    for file_number in range(FILES):
        functions = [function_source(2 * file_number + offset) for offset in (0, 1)]
        (root / f"module_{file_number:02d}.py").write_text("\n\n".join(functions))
    (root / "special.py").write_text(SPECIAL)
    return root


def function_lines(number):
    """The lines of `scale_{number}` as code: without its docstring."""
    return [line for line in function_source(number).splitlines() if '"""' not in line]


def file_of(name):
    number = re.fullmatch(r"scale_(\d+)", name)
    return int(number.group(1)) // 2 if number else "special"


def read_split_files(out, reader):
    return {split: reader(out, split) for split in SPLITS}


def assert_split_by_file(records_by_split, name_of):
    split_of_file = {}
    for split, records in records_by_split.items():
        for record in records:
            assert split_of_file.setdefault(file_of(name_of(record)), split) == split
    assert set(split_of_file.values()) == set(SPLITS)


def test_code_generation_records(tree, tmp_path):
    summary = build_code_generation([tree], tmp_path / "out")
    assert summary.left_out == {"empty body": 1}  # placeholder; undocumented is not read
    records = read_split_files(tmp_path / "out", read_concode)
    assert sum(summary.split_records.values()) == 2 * FILES + 1
    by_name = {
        re.search(r"signature: (?:async )?def (\w+)", record["nl"]).group(1): record
        for split_records in records.values()
        for record in split_records
    }
    assert by_name["circumference"] == {
        "nl": "Compute the circumference of the circle. "
        "signature: def circumference(self, scale=1) -> float:",
        "code": "total = 2 * math.pi * self.radius\n"
        "if scale != 1:\n    total = total * scale\nreturn total",
    }
    assert by_name["scale_5"]["nl"] == (
        "Scale every value by the factor 5. signature: def scale_5(values, factor=5):"
    )
    body = "\n".join(line[4:] for line in function_lines(5)[1:])
    assert by_name["scale_5"]["code"] == body
    for record in by_name.values():
        assert record["code"].strip()
        ast.parse(record["code"])
    assert_split_by_file(
        records, lambda record: re.search(r"def (\w+)", record["nl"]).group(1)
    )


def test_line_completion_records(tree, tmp_path):
    summary = build_line_completion([tree], tmp_path / "out", seed=0)
    assert summary.left_out == {"empty body": 1}
    records = read_split_files(tmp_path / "out", read_line_completion)
    cuts = set()
    for split_records in records.values():
        for record in split_records:
            assert set(record) == {"input", "gt"}
            assert record["input"].startswith("<s> def ") and record["input"].endswith(" <EOL>")
            assert record["gt"] and record["gt"] == record["gt"].strip()
            lines = record["input"][len("<s> ") : -len(" <EOL>")].split(" <EOL> ")
            name = re.match(r"def (\w+)", lines[0]).group(1)
            if name.startswith("scale_"):
                # The prefix is the function's first lines, indentation kept; gt the next line.
                expected = function_lines(int(name[len("scale_") :]))
                assert lines == expected[: len(lines)]
                assert record["gt"] == expected[len(lines)].strip()
                cuts.add(len(lines))
    assert len(cuts) > 2  # the cut moves from function to function
    assert_split_by_file(records, lambda record: re.match(r"<s> def (\w+)", record["input"])[1])


def test_line_completion_is_deterministic_per_seed(tree, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build_line_completion([tree], tmp_path / name, seed=seed)

    def contents(name):
        return [(tmp_path / name / f"{split}.jsonl").read_bytes() for split in SPLITS]

    assert contents("a") == contents("b") != contents("c")


@pytest.mark.parametrize("build", [build_code_generation, build_line_completion])
def test_user_errors(build, tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        build([tmp_path / "absent"], tmp_path / "out")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        build([tmp_path], tmp_path / "file")
