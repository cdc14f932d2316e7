"""The BigCloneBench-format clone data built from Python source files."""

import ast
import re
from collections import Counter

import pytest

from telly.data.clones import LENGTH_TOLERANCE, build_clones
from telly.data.formats import read_bigclonebench
from telly.data.corpus import SPLITS
from telly.data.python_corpus import python_tokens
from telly.data.rewrite import canonical_form
from telly.errors import UserError

FILES = 24
FUNCTIONS_PER_FILE = 3


def function_source(number):
    """Functions of 3 to 8 statements, all different but alike in shape."""
    extra = "".join(f"    total = total * {step + 2} - {number}\n" for step in range(number % 6))
    return (
        f"def step_{number}(values, limit):\n"
        f"    total = {number}\n"
        f"    for i in range(limit):\n"
        f"        total += values[i] * {number + 1}\n"
        f"{extra}"
        f"    return total\n"
    )


def write_tree(root):
    root.mkdir(parents=True)
    for file_number in range(FILES):
        numbers = range(file_number * FUNCTIONS_PER_FILE, (file_number + 1) * FUNCTIONS_PER_FILE)
        functions = [function_source(number) for number in numbers]
        functions.append("def too_short(x):\n    y = x\n    return y\n")  # 2 statements
        (root / f"module_{file_number:02d}.py").write_text("\n\n".join(functions))
    (root / "broken.py").write_text("def f(:\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("clones")
    write_tree(root / "src")
    summary = build_clones([root / "src"], root / "out", seed=0)
    return root, summary


def def_name(code):
    return ast.parse(code).body[0].name


def number_of(code):
    """Which `step_{number}` function `code` is, original or rewrite: its first statement is
    `total = {number}`, whatever the names."""
    return ast.parse(code).body[0].body[0].value.value


def read_all(out):
    return {split: read_bigclonebench(out, split) for split in SPLITS}


def test_summary(built):
    _, summary = built
    assert summary.corpus.functions == FILES * FUNCTIONS_PER_FILE  # too_short left out
    assert summary.corpus.skipped == {"unparsable": 1}
    # A function whose split has no other of similar length gives no pairs (balance).
    assert set(summary.left_out) <= {"no partner of similar length"}
    paired = FILES * FUNCTIONS_PER_FILE - sum(summary.left_out.values())
    assert sum(summary.split_records.values()) == 2 * paired > 0
    assert summary.rewrites["rename"] == FILES * FUNCTIONS_PER_FILE
    text = str(summary)
    assert "functions left out" in text and " pairs; rewrites: " in text


def test_pairs_are_balanced_and_labelled_right(built):
    root, _ = built
    originals = [function_source(n).rstrip("\n") for n in range(FILES * FUNCTIONS_PER_FILE)]
    for split, data in read_all(root / "out").items():
        labels = Counter(label for _, _, label in data.pairs)
        assert labels[0] == labels[1] > 0, split
        for first, second, label in data.pairs:
            original, rewrite = data.functions[first], data.functions[second]
            # Always an original function first and a rewritten one second, named differently.
            assert original == originals[number_of(original)]
            assert rewrite != originals[number_of(rewrite)]
            assert def_name(rewrite) != def_name(original)
            assert (number_of(original) == number_of(rewrite)) == (label == 1)
            if label == 0:
                partner = originals[number_of(rewrite)]
                length, partner_length = len(python_tokens(original)), len(python_tokens(partner))
                assert abs(length - partner_length) <= LENGTH_TOLERANCE * length
                assert canonical_form(partner) != canonical_form(original)


def test_no_file_in_two_splits_and_negatives_from_the_same_split(built):
    root, _ = built
    split_of_file = {}
    for split, data in read_all(root / "out").items():
        for pair in data.pairs:
            for idx in pair[:2]:
                file_number = number_of(data.functions[idx]) // FUNCTIONS_PER_FILE
                assert split_of_file.setdefault(file_number, split) == split
    assert set(split_of_file.values()) == set(SPLITS)


def test_data_holds_each_function_and_rewrite_once(built):
    root, _ = built
    data = read_all(root / "out")["train"]
    assert len(data.functions) == 2 * FILES * FUNCTIONS_PER_FILE
    assert len(set(data.functions.values())) == len(data.functions)
    lines = (root / "out" / "train.txt").read_text().splitlines()
    assert all(re.fullmatch(r"\d+\t\d+\t[01]", line) for line in lines)


def test_same_seed_gives_identical_files_another_seed_different(built, tmp_path):
    root, _ = built
    build_clones([root / "src"], tmp_path / "same", seed=0)
    build_clones([root / "src"], tmp_path / "other", seed=1)
    names = ["data.jsonl"] + [f"{split}.txt" for split in SPLITS]
    for name in names:
        assert (tmp_path / "same" / name).read_bytes() == (root / "out" / name).read_bytes()
    assert any(
        (tmp_path / "other" / name).read_bytes() != (root / "out" / name).read_bytes()
        for name in names
    )


def test_functions_equal_up_to_names_are_never_negatives(tmp_path):
    # Each file holds the same function under other names: no valid hard negative exists.
    (tmp_path / "src").mkdir()
    for number in range(6):
        (tmp_path / "src" / f"copy_{number}.py").write_text(
            f"def copy_{number}(a{number}, b):\n    c = a{number} + b\n"
            f"    d = c * 2\n    return d - a{number}\n"
        )
    summary = build_clones([tmp_path / "src"], tmp_path / "out")
    assert summary.left_out == {"no partner of similar length": 6}
    assert sum(summary.split_records.values()) == 0


def test_user_errors(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "small.py").write_text("def f(x):\n    return x\n")
    with pytest.raises(UserError, match="no functions of at least 3 statements found"):
        build_clones([tmp_path / "src"], tmp_path / "out")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        build_clones([tmp_path / "src"], tmp_path / "file")
