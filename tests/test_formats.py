import gzip
import json

import pytest

from telly.data.formats import (
    CODESEARCHNET_FIELDS,
    read_codesearchnet_split,
    read_jsonl,
    write_jsonl,
)
from telly.errors import UserError


def csn_record(name, partition="train"):
    return {
        "repo": "example/repo",
        "path": "pkg/module.py",
        "func_name": name,
        "original_string": f'def {name}():\n    """Return the answer."""\n    return 42',
        "language": "python",
        "code": f"def {name}():\n    return 42",
        "code_tokens": ["def", name, "(", ")", ":", "return", "42"],
        "docstring": "Return the answer.",
        "docstring_tokens": ["Return", "the", "answer", "."],
        "url": "",
        "partition": partition,
    }


RECORDS = [csn_record("first"), csn_record("second"), {"text": "naïve ✓"}]


def test_csn_fields_match_the_reference_order():
    assert list(csn_record("f")) == list(CODESEARCHNET_FIELDS)


def test_plain_and_gzip_files_read_the_same(tmp_path):
    write_jsonl(tmp_path / "data.jsonl", RECORDS)
    write_jsonl(tmp_path / "data.jsonl.gz", RECORDS)
    with gzip.open(tmp_path / "data.jsonl.gz", "rt", encoding="utf-8") as stream:
        assert stream.read() == (tmp_path / "data.jsonl").read_text(encoding="utf-8")
    assert read_jsonl(tmp_path / "data.jsonl") == RECORDS
    assert read_jsonl(tmp_path / "data.jsonl.gz") == RECORDS


def test_written_file_is_utf8_one_object_per_line_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "out" / "data.jsonl"
    write_jsonl(path, RECORDS)
    lines = path.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(RECORDS) + 1
    assert "naïve ✓" in lines[2]  # not \u escapes
    assert [p.name for p in path.parent.iterdir()] == ["data.jsonl"]


def test_gzip_output_is_deterministic(tmp_path):
    write_jsonl(tmp_path / "a.jsonl.gz", RECORDS)
    write_jsonl(tmp_path / "b" / "a.jsonl.gz", RECORDS)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b" / "a.jsonl.gz").read_bytes()


def test_bom_crlf_and_blank_lines_are_tolerated(tmp_path):
    lines = [json.dumps(record, ensure_ascii=False) for record in RECORDS]
    text = "\ufeff" + lines[0] + "\r\n\r\n" + lines[1] + "\r\n   \r\n" + lines[2] + "\r\n\r\n"
    path = tmp_path / "windows.jsonl"
    path.write_bytes(text.encode("utf-8"))
    assert read_jsonl(path) == RECORDS


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2,, }\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"train\.jsonl line 3: not valid JSON \(Expecting"):
        read_jsonl(path)


def test_line_that_is_not_an_object_is_rejected(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"list\.jsonl line 2: expected a JSON object, got list"):
        read_jsonl(path)


def test_non_utf8_bytes_name_the_file(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"latin\.jsonl line 2: not UTF-8"):
        read_jsonl(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file: .*nothing.jsonl"):
        read_jsonl(tmp_path / "nothing.jsonl")


def test_corrupt_gzip_is_a_user_error(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(UserError, match="broken.jsonl.gz: not a valid gzip file"):
        read_jsonl(path)


def test_codexglue_layout(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [csn_record("a"), csn_record("b")])
    write_jsonl(tmp_path / "test.jsonl.gz", [csn_record("c", "test")])
    assert [r["func_name"] for r in read_codesearchnet_split(tmp_path, "train")] == ["a", "b"]
    assert [r["func_name"] for r in read_codesearchnet_split(tmp_path, "test")] == ["c"]


def test_official_codesearchnet_layout_is_found_in_sorted_order(tmp_path):
    folder = tmp_path / "python" / "final" / "jsonl" / "train"
    write_jsonl(folder / "python_train_1.jsonl.gz", [csn_record("b")])
    write_jsonl(folder / "python_train_0.jsonl.gz", [csn_record("a")])
    write_jsonl(folder / "notes.jsonl.gz", [csn_record("not part of the split")])
    records = read_codesearchnet_split(tmp_path / "python", "train")
    assert [r["func_name"] for r in records] == ["a", "b"]


def test_split_folder_layout(tmp_path):
    write_jsonl(tmp_path / "valid" / "part0.jsonl.gz", [csn_record("v", "valid")])
    assert read_codesearchnet_split(tmp_path, "valid")[0]["func_name"] == "v"


def test_missing_split_says_where_it_looked(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [csn_record("a")])
    looked_for = r"looked for test\.jsonl, test\.jsonl\.gz, final/jsonl/test/\*_test_\*\.jsonl\.gz"
    with pytest.raises(UserError, match=rf"no test data in .*: {looked_for}"):
        read_codesearchnet_split(tmp_path, "test")


def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        read_codesearchnet_split(tmp_path / "absent", "train")


def test_empty_split(tmp_path):
    (tmp_path / "train.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="empty split: train"):
        read_codesearchnet_split(tmp_path, "train")


def test_missing_field_names_field_and_line(tmp_path):
    incomplete = csn_record("b")
    del incomplete["docstring_tokens"]
    write_jsonl(tmp_path / "train.jsonl", [csn_record("a"), incomplete])
    with pytest.raises(UserError, match=r'train\.jsonl line 2: missing field "docstring_tokens"'):
        read_codesearchnet_split(tmp_path, "train")


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("code_tokens", "def f ( ) :", "must be a list of strings"),
        ("code_tokens", ["def", 1], "must be a list of strings"),
        ("code", ["def f(): pass"], "must be a string"),
    ],
)
def test_wrongly_typed_field_is_rejected(tmp_path, field, value, expected):
    write_jsonl(tmp_path / "train.jsonl", [{**csn_record("a"), field: value}])
    with pytest.raises(UserError, match=rf'line 1: field "{field}" {expected}'):
        read_codesearchnet_split(tmp_path, "train", required=("code", "code_tokens"))


def test_only_required_fields_are_checked(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"code": "x = 1"}])
    assert read_codesearchnet_split(tmp_path, "train", required=("code",)) == [{"code": "x = 1"}]
