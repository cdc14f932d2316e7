import ast
import io
import json
import sysconfig
import textwrap
import tokenize
from pathlib import Path

import pytest

from telly.cli import main
from telly.data.formats import read_codesearchnet_split, read_jsonl
from telly.data.corpus import SPLITS, build_code_search
from telly.data.python_corpus import extract_functions, python_tokens
from telly.errors import UserError

SHAPES = '''\
"""Shapes and their measures."""
import functools


def area(width, height):
    """Return the area of a rectangle."""
    return width * height


def undocumented(x):
    return x


def short(x):
    """Too short."""
    return x


@functools.lru_cache(maxsize=None)
def cached_square(n):
    """Square a number, remembering results."""
    return n * n


class Circle:
    """A round shape with a radius."""

    def __init__(self, radius):
        self.radius = radius

    def circumference(self):
        """Compute the circumference of the circle.

        Uses pi from the math module.
        """
        import math
        return 2 * math.pi * self.radius
'''

TASKS = '''\
async def fetch(url, session):
    """Fetch the body of a web page."""
    async with session.get(url) as response:
        return await response.text()


def outer(values):
    """Sum the squares of the values."""
    def square(v):
        """Square a single value here."""
        return v * v
    return sum(square(v) for v in values)


def placeholder():
    """This function does nothing yet."""


def one_liner(): "doc here ok"; return 1


def area(width, height):
    """Return the area of a rectangle."""
    return width * height
'''


def write_small_tree(root):
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "shapes.py").write_text(SHAPES, encoding="utf-8")
    (root / "pkg" / "tasks.py").write_text(TASKS, encoding="utf-8")
    units = 'def meters(feet):\n    """Convert feet to meters."""\n    return feet * 0.3048\n'
    (root / "pkg" / "units.py").write_text(units, encoding="utf-8")
    (root / "pkg" / "latin.py").write_bytes(b'def f():\n    """Caf\xe9 au lait is nice."""\n')
    (root / "pkg" / "broken.py").write_text("def f(:\n    pass\n", encoding="utf-8")
    nul_source = b'def f():\n    """Has a NUL byte."""\n    return "\x00"\n'
    (root / "pkg" / "nul.py").write_bytes(nul_source)
    # Parses in principle, but nests deeper than Python's parser can recurse.
    (root / "pkg" / "deep.py").write_text('def f(x):\n    """Too deep."""\n    return ' + "-" * 5000 + "x\n")
    # Never walked: test directories and caches.
    for skipped in ("tests", "__pycache__"):
        (root / "pkg" / skipped).mkdir()
        (root / "pkg" / skipped / "extra.py").write_text(SHAPES.replace("area", "other"))


def write_many_files(root, count=40):
    """`count` modules of 1 to 3 documented functions each; returns the number of functions."""
    root.mkdir(parents=True)
    total = 0
    for i in range(count):
        functions = [
            f'def add_{i}_{j}(x):\n    """Add {j} to the number {i}."""\n    return x + {j}\n'
            for j in range(1 + i % 3)
        ]
        (root / f"module_{i:02d}.py").write_text("\n\n".join(functions), encoding="utf-8")
        total += len(functions)
    return total


@pytest.fixture
def small_build(tmp_path):
    write_small_tree(tmp_path / "src")
    summary = build_code_search([tmp_path / "src"], tmp_path / "out")
    out = tmp_path / "out"
    records = [r for split in SPLITS for r in read_jsonl(out / f"{split}.jsonl")]
    return summary, {r["func_name"]: r for r in records}


def test_documented_functions_are_extracted_with_qualified_names(small_build):
    _, by_name = small_build
    assert set(by_name) == {
        "area",
        "cached_square",
        "Circle.circumference",
        "fetch",
        "outer",
        "outer.square",
        "placeholder",
        "meters",
    }
    assert by_name["area"]["path"] == "pkg/shapes.py"  # the first copy is kept


def test_docstring_is_removed_from_code_only(small_build):
    _, by_name = small_build
    for record in by_name.values():
        first_line = record["docstring"].splitlines()[0]
        assert first_line not in record["code"]
        assert first_line in record["original_string"]
        ast.parse(record["code"])
        ast.parse(record["original_string"])
    method = by_name["Circle.circumference"]
    assert method["code"] == (
        "def circumference(self):\n    import math\n    return 2 * math.pi * self.radius"
    )
    assert method["docstring"] == (
        "Compute the circumference of the circle.\n\nUses pi from the math module."
    )
    assert by_name["placeholder"]["code"] == "def placeholder():\n    pass"
    decorated = by_name["cached_square"]["code"]
    assert decorated.startswith("@functools.lru_cache(maxsize=None)\ndef cached_square")


def test_tokens(small_build):
    _, by_name = small_build
    area = by_name["area"]
    # Written out by hand: Python's tokens without layout.
    expected = "def area ( width , height ) : return width * height".split()
    assert area["code_tokens"] == expected
    assert area["docstring_tokens"] == ["Return", "the", "area", "of", "a", "rectangle", "."]
    # Only the first paragraph of a docstring is tokenized.
    first_paragraph = "Compute the circumference of the circle .".split()
    assert by_name["Circle.circumference"]["docstring_tokens"] == first_paragraph


# Code whose tokens two tokenizers could tell apart: strings of every kind, numbers, continuations,
# comments, tabs, form feeds, non-ASCII names, the walrus, `...`, decorators, nested functions.
TOKENIZER_CASES = [
    'def f(x):\n    return f"{x!r:>{10}} {{braces}}" + rb\'\\d\' + u"\u00e9" + """a\n  b"""',
    "def f():\n    return 0x_ff + 1_000.5e-3j + 0o17 + 0b1 + 1if 1else 2",
    "def f(a,\n      b):  # a comment\n    x = a + \\\n        b\n    return [y\n            for y in (x,)]",
    "def f():\n\tif True:\n\t\treturn ...\n\f\n\treturn None",
    "def größe(höhe):\n    return (n := höhe) ** 2 // n @ n",
    "@decorator(1)\nasync def f():\n    async with a as b:\n        await b\n    def g(*, k=-1, **kw) -> 'T': pass",
    "def f():\n    match x:\n        case [1, *rest] | {'k': _}:\n            return rest",
]


def tokenize_module_tokens(code: str) -> list[str]:
    """The tokens of Python's `tokenize` module, without comments and layout: written out here,
    independently of telly's."""
    layout = {tokenize.COMMENT, tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    return [token.string for token in tokenize.generate_tokens(io.StringIO(code).readline) if token.type not in layout]


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # `1if`: a number glued to a keyword still parses
@pytest.mark.parametrize("code", TOKENIZER_CASES)
def test_code_tokens_are_the_tokenize_modules_own(code):
    ast.parse(code)
    assert python_tokens(code) == tokenize_module_tokens(code)


def test_code_tokens_of_stdlib_functions_are_the_tokenize_modules_own():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    functions = [function for module in ("tokenize.py", "argparse.py", "string.py")
                 for function in extract_functions((stdlib / module).read_text(encoding="utf-8"), module,
                                                   require_docstring=False)]
    assert len(functions) > 100
    for function in functions:
        assert list(function.code_tokens) == tokenize_module_tokens(function.code)


def test_records_are_complete_codesearchnet_records(small_build, tmp_path):
    for split in SPLITS:
        for record in read_jsonl(tmp_path / "out" / f"{split}.jsonl"):
            assert record["partition"] == split
            assert record["language"] == "python"
            assert record["repo"] == "src"
    assert len(read_codesearchnet_split(tmp_path / "out", "train")) > 0


def test_summary_counts(small_build):
    summary, _ = small_build
    assert summary.files_seen == 7
    assert summary.skipped == {"not UTF-8": 1, "too deep to parse": 1, "unparsable": 1, "with NUL bytes": 1}
    assert summary.files_used == 3
    assert summary.functions == 8
    assert summary.duplicates_dropped == 1
    assert sum(summary.split_functions.values()) == 8
    assert summary.split_files == {"train": 1, "valid": 1, "test": 1}  # three files: one for each split
    text = str(summary)
    skipped = "4 skipped: 1 not UTF-8, 1 too deep to parse, 1 unparsable, 1 with NUL bytes"
    assert text.startswith(f"read 7 files ({skipped}); ")
    assert "8 functions from 3 files, 1 duplicates dropped; train " in text


def test_splits_are_by_file_deterministic_and_depend_on_the_seed(tmp_path):
    total = write_many_files(tmp_path / "src")

    def build(seed, name):
        summary = build_code_search([tmp_path / "src"], tmp_path / name, seed=seed)
        files = {split: (tmp_path / name / f"{split}.jsonl").read_bytes() for split in SPLITS}
        return summary, files

    summary, files = build(0, "a")
    _, same = build(0, "b")
    _, other = build(1, "c")
    assert files == same
    assert files != other

    split_of_path = {}
    for split, data in files.items():
        for line in data.decode("utf-8").splitlines():
            path = json.loads(line)["path"]
            assert split_of_path.setdefault(path, split) == split
    assert summary.functions == total
    for split in ("valid", "test"):
        assert abs(summary.split_functions[split] - 0.1 * total) <= 3  # one file at most
        assert summary.split_files[split] >= 1


def write_module(path, functions):
    """A module of `functions` documented one-line functions, named after the file."""
    path.write_text("\n".join(
        f'def {path.stem}_{i}(x):\n    """Add {i} to the given number."""\n    return x + {i}\n'
        for i in range(functions)
    ), encoding="utf-8")


def test_splits_are_balanced_by_functions_when_file_sizes_are_skewed(tmp_path):
    # One file holds 40 of 50 functions. Dealt as files, it could land in valid or test; dealt by
    # functions, train takes it whatever the seed, and valid and test get 5 each (1 file each).
    (tmp_path / "three").mkdir()
    for name, functions in {"big": 40, "five": 5, "other": 5}.items():
        write_module(tmp_path / "three" / f"{name}.py", functions)
    for seed in range(5):
        summary = build_code_search([tmp_path / "three"], tmp_path / f"three{seed}", seed=seed)
        assert summary.split_functions == {"train": 40, "valid": 5, "test": 5}
        assert read_jsonl(tmp_path / f"three{seed}" / "train.jsonl")[0]["path"] == "big.py"
    # With 40, 5, 3, 1 and 1, valid and test hold within a factor 2 of their 10% (5 functions).
    (tmp_path / "five").mkdir()
    for name, functions in {"big": 40, "five": 5, "three": 3, "one": 1, "single": 1}.items():
        write_module(tmp_path / "five" / f"{name}.py", functions)
    for seed in range(10):
        summary = build_code_search([tmp_path / "five"], tmp_path / f"five{seed}", seed=seed)
        assert summary.split_functions["train"] >= 40
        assert 2.5 <= summary.split_functions["valid"] <= 10 and 2.5 <= summary.split_functions["test"] <= 10


def test_two_stdlib_packages_give_three_non_empty_balanced_splits(tmp_path):
    # Shuffled, json's and email's 33 files once put email's biggest module (141 functions) in
    # valid and none in test.
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = tmp_path / "out"
    argv = ["data", "build", str(stdlib / "json"), str(stdlib / "email"), "--task", "code-completion", "--out", str(out)]
    assert main(argv) == 0
    records = {split: read_jsonl(out / f"{split}.jsonl") for split in SPLITS}
    total = sum(map(len, records.values()))
    for split in ("valid", "test"):
        assert 0.05 * total <= len(records[split]) <= 0.2 * total  # within a factor 2 of 10%


def test_fewer_files_than_splits_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for name in ("a", "b"):
        write_module(tmp_path / "src" / f"{name}.py", 10)
    assert main(["data", "build", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "telly: error: a split by file needs at least 3 files with documented functions, one for each of "
        f"train, valid, test; {tmp_path / 'src'} hold 2\n"
    )
    assert not (tmp_path / "out").exists()


def test_extract_handles_crlf_nested_strings_and_conditional_definitions():
    source = textwrap.dedent('''\
        import sys
        if sys.platform == "win32":
            class Console:
                def banner(self):
                    """Return the banner shown at start."""
                    return """
        Welcome
        """
        ''').replace("\n", "\r\n")
    [function] = extract_functions(source, "console.py")
    assert function.func_name == "Console.banner"
    assert function.code == 'def banner(self):\n    return """\nWelcome\n"""'
    ast.parse(function.code)


def test_docstring_sharing_a_line_is_skipped():
    source = 'def f():\n    "Three words here"; return 1\n\ndef g(): "Three words again"\n'
    assert extract_functions(source, "x.py") == []


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        build_code_search([tmp_path / "absent"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.py").write_text("def f(x):\n    return x\n")
    with pytest.raises(UserError, match="no documented functions"):
        build_code_search([tmp_path / "empty"], tmp_path / "out")
    write_small_tree(tmp_path / "src")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        build_code_search([tmp_path / "src"], tmp_path / "file")
    with pytest.raises(UserError, match="fractions"):
        # valid + test must leave something for train
        build_code_search([tmp_path / "src"], tmp_path / "out", valid_fraction=0.5, test_fraction=.5)


# --- Hostile source trees and the data folder ----------------------------------------------------


def test_special_files_and_large_files_are_skipped_and_counted(tmp_path):
    import os
    import subprocess
    import sys

    write_many_files(tmp_path / "src", count=10)
    os.mkfifo(tmp_path / "src" / "pipe.py")  # opening it to read would wait for a writer forever
    (tmp_path / "src" / "zero.py").symlink_to("/dev/zero")  # reading it would never end
    (tmp_path / "src" / "table.py").write_text('def big():\n    """A generated table."""\n    return 1\n' + "#" * 30_000)
    # In a process of its own, so that a regression hangs that process, not the test run.
    build = subprocess.run([sys.executable, "-m", "telly.cli", "data", "build", str(tmp_path / "src"), "--out",
                            str(tmp_path / "out"), "--max-file-mb", "0.02"], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    assert "read 13 files (3 skipped: 1 larger than 0.02 MB, 2 not a regular file); " in build.stdout
    assert "big" not in (tmp_path / "out" / "train.jsonl").read_text()


def test_a_tree_thousands_of_folders_deep_is_walked(tmp_path):
    import os

    write_many_files(tmp_path / "src", count=10)
    depth = 1500  # deeper than the recursion limit (os.walk recursed once per level), within PATH_MAX
    top = os.open(tmp_path / "src", os.O_RDONLY)
    folders = [top]
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=folders[-1])
            folders.append(os.open("d", os.O_RDONLY, dir_fd=folders[-1]))
        bottom = os.open("deepest.py", os.O_WRONLY | os.O_CREAT, dir_fd=folders[-1])
        os.write(bottom, b'def deepest(x):\n    """Found at the bottom of the tree."""\n    return x\n')
        os.close(bottom)
        summary = build_code_search([tmp_path / "src"], tmp_path / "out")
        assert summary.files_seen == 11 and summary.skipped == {}
        records = [record for split in SPLITS for record in read_jsonl(tmp_path / "out" / f"{split}.jsonl")]
        assert [record["path"].count("d/") for record in records if record["func_name"] == "deepest"] == [depth]
    finally:  # removed level by level: shutil.rmtree recurses as deep as the tree
        os.unlink("deepest.py", dir_fd=folders[-1])
        for parent, child in zip(folders[-2::-1], folders[:0:-1]):
            os.close(child)
            os.rmdir("d", dir_fd=parent)
        os.close(top)


def test_the_data_folder_is_refused_when_not_empty_and_replaced_whole(tmp_path):
    write_many_files(tmp_path / "src")
    out = tmp_path / "out"
    build_code_search([tmp_path / "src"], out, seed=0)
    first = {split: (out / f"{split}.jsonl").read_bytes() for split in SPLITS}
    with pytest.raises(UserError, match=r"data folder .*out is not empty; pass --overwrite"):
        build_code_search([tmp_path / "src"], out, seed=1)
    build_code_search([tmp_path / "src"], out, seed=1, overwrite=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "src"]  # no temporary folder left
    assert {split: (out / f"{split}.jsonl").read_bytes() for split in SPLITS} != first
    with pytest.raises(UserError, match=r"--out .*src holds the source .*pkg"):
        build_code_search([tmp_path / "src" / "pkg"], tmp_path / "src", overwrite=True)


def test_a_build_interrupted_between_two_splits_leaves_the_earlier_set_whole(tmp_path, monkeypatch, capsys):
    import telly.data.corpus

    write_many_files(tmp_path / "src")
    out = tmp_path / "out"
    build_code_search([tmp_path / "src"], out, seed=0)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    real_write = telly.data.corpus.write_jsonl

    def write_then_interrupt(path, records):
        real_write(path, records)
        raise KeyboardInterrupt  # Ctrl-C right after the train split is written

    monkeypatch.setattr(telly.data.corpus, "write_jsonl", write_then_interrupt)
    capsys.readouterr()
    assert main(["data", "build", str(tmp_path / "src"), "--out", str(out), "--seed", "1", "--overwrite"]) == 130
    assert capsys.readouterr().err == "telly: interrupted (nothing was written; the --out folder is as it was)\n"
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # not a new train beside the old test
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "src"]
