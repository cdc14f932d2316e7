"""Readers and writers of the clone detection, code generation and line completion formats."""

import json

import pytest

from telly.data.formats import (
    ClonePairs,
    read_bigclonebench,
    read_concode,
    read_line_completion,
    write_bigclonebench,
    write_jsonl,
)
from telly.errors import UserError

FUNCTIONS = {"10": "int f() { return 1; }", "11": "int g() { return 1; }", "12": "void h() {}"}


def write_official_bigclonebench(folder, pair_lines, records=None):
    """data.jsonl as CodeXGLUE ships it (idx strings) plus a train.txt with `pair_lines`."""
    folder.mkdir(exist_ok=True)
    records = records or [{"func": code, "idx": idx} for idx, code in FUNCTIONS.items()]
    write_jsonl(folder / "data.jsonl", records)
    (folder / "train.txt").write_text("".join(line + "\n" for line in pair_lines))


def test_bigclonebench_official_files(tmp_path):
    write_official_bigclonebench(tmp_path, ["10\t11\t1", "10\t12\t0", "11   12 0"])
    data = read_bigclonebench(tmp_path, "train")
    assert data == ClonePairs(
        functions=FUNCTIONS, pairs=[("10", "11", 1), ("10", "12", 0), ("11", "12", 0)]
    )


def test_bigclonebench_integer_idx_bom_and_crlf(tmp_path):
    records = [{"func": code, "idx": int(idx)} for idx, code in FUNCTIONS.items()]
    write_official_bigclonebench(tmp_path, [], records)
    (tmp_path / "train.txt").write_bytes("\ufeff10\t11\t1\r\n\r\n12\t10\t0\r\n".encode())
    data = read_bigclonebench(tmp_path, "train")
    assert data.functions == FUNCTIONS
    assert data.pairs == [("10", "11", 1), ("12", "10", 0)]


def test_bigclonebench_round_trip(tmp_path):
    splits = {"train": [("10", "11", 1)], "valid": [("11", "12", 0)], "test": [("12", "10", 0)]}
    write_bigclonebench(tmp_path, FUNCTIONS, splits)
    assert (tmp_path / "train.txt").read_text() == "10\t11\t1\n"
    for split, pairs in splits.items():
        assert read_bigclonebench(tmp_path, split) == ClonePairs(FUNCTIONS, pairs)


@pytest.mark.parametrize(
    "pair_lines, message",
    [
        (["10\t11\t1", "10\t99\t0"], r"train\.txt line 2: unknown idx 99 \(not in data\.jsonl\)"),
        (["10\t11"], r"train\.txt line 1: expected idx1, idx2 and a label, got 2 fields"),
        (["10\t11\t1\t0"], r"train\.txt line 1: expected idx1, idx2 and a label, got 4 fields"),
        (["10\t11\tyes"], r"train\.txt line 1: label must be 0 or 1, got 'yes'"),
        (["", "  "], r"empty split: train \(no pairs in .*train\.txt\)"),
    ],
)
def test_bigclonebench_bad_pairs(tmp_path, pair_lines, message):
    write_official_bigclonebench(tmp_path, pair_lines)
    with pytest.raises(UserError, match=message):
        read_bigclonebench(tmp_path, "train")


@pytest.mark.parametrize(
    "records, message",
    [
        (
            [{"func": "a", "idx": "1"}, {"func": "b", "idx": 1}],
            r"data\.jsonl line 2: duplicate idx 1",
        ),
        ([{"func": "a"}], r'data\.jsonl line 1: missing field "idx"'),
        ([{"func": "a", "idx": 1.5}], r'line 1: field "idx" must be a string or an integer'),
        ([{"func": ["a"], "idx": "1"}], r'line 1: field "func" must be a string'),
    ],
)
def test_bigclonebench_bad_data(tmp_path, records, message):
    write_official_bigclonebench(tmp_path, ["1\t1\t1"], records)
    with pytest.raises(UserError, match=message):
        read_bigclonebench(tmp_path, "train")


def test_bigclonebench_missing_files(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        read_bigclonebench(tmp_path / "absent", "train")
    write_official_bigclonebench(tmp_path, ["10\t11\t1"])
    with pytest.raises(UserError, match=r"no such file: .*test\.txt"):
        read_bigclonebench(tmp_path, "test")
    (tmp_path / "data.jsonl").unlink()
    with pytest.raises(UserError, match=r"no such file: .*data\.jsonl"):
        read_bigclonebench(tmp_path, "train")


CONCODE = [{"nl": "return the sum . signature: def total(items):", "code": "return sum(items)"}]
COMPLETION = [{"input": "<s> def f(x): <EOL>", "gt": "return x"}]


def write_json_lines_with_bom_and_crlf(path, records):
    lines = [json.dumps(record) for record in records]
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())


@pytest.mark.parametrize(
    "reader, records", [(read_concode, CONCODE), (read_line_completion, COMPLETION)]
)
def test_codexglue_file_names(tmp_path, reader, records):
    write_json_lines_with_bom_and_crlf(tmp_path / "test.json", records)  # CodeXGLUE's name
    write_jsonl(tmp_path / "train.jsonl", records)  # our builders' name
    write_jsonl(tmp_path / "dev.json", records)  # CodeXGLUE calls the validation split dev
    for split in ("train", "valid", "test"):
        assert reader(tmp_path, split) == records
    (tmp_path / "dev.json").unlink()
    with pytest.raises(UserError, match=r"no valid data in .*: looked for valid\.jsonl, "):
        reader(tmp_path, "valid")


@pytest.mark.parametrize(
    "reader, record, message",
    [
        (read_concode, {"code": "x = 1"}, 'line 2: missing field "nl"'),
        (read_concode, {"nl": "make x", "code": "  \n "}, 'line 2: field "code" is empty'),
        (read_concode, {"nl": "make x", "code": ["x"]}, 'line 2: field "code" must be a string'),
        (read_concode, {"nl": 3, "code": "x = 1"}, 'line 2: field "nl" must be a string'),
        (read_line_completion, {"input": "<s> x <EOL>"}, 'line 2: missing field "gt"'),
        (read_line_completion, {"input": "<s> x <EOL>", "gt": " "}, 'line 2: field "gt" is empty'),
        (read_line_completion, {"input": 1, "gt": "y"}, 'line 2: field "input" must be a string'),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, reader, record, message):
    good = CONCODE[0] if reader is read_concode else COMPLETION[0]
    write_jsonl(tmp_path / "train.jsonl", [good, record])
    with pytest.raises(UserError, match=rf"train\.jsonl {message}"):
        reader(tmp_path, "train")


@pytest.mark.parametrize("reader", [read_concode, read_line_completion])
def test_empty_split_and_missing_directory(tmp_path, reader):
    (tmp_path / "test.json").write_text("\n")
    with pytest.raises(UserError, match="empty split: test"):
        reader(tmp_path, "test")
    with pytest.raises(UserError, match="no such directory"):
        reader(tmp_path / "absent", "test")
