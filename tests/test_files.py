"""Result files are standard JSON, written whole; JSON read from users fails in one clear way."""

import json

import pytest

from telly.errors import UserError
from telly.files import read_json, write_json


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_write_json_refuses_what_json_cannot_hold_and_names_where_it_is(tmp_path, value):
    path = tmp_path / "metrics.json"
    path.write_text('{"old": 1}\n')
    with pytest.raises(ValueError, match=rf"cannot write .*metrics\.json: the value\['test'\]\['mrr'\] = {value} is not a finite number"):
        write_json(path, {"test": {"mrr": value, "r@1": 1.0}, "history": [1, 2]})
    assert json.loads(path.read_text()) == {"old": 1}  # the earlier file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # and no temporary file is left


def test_write_json_writes_standard_json(tmp_path):
    write_json(tmp_path / "a.json", {"x": [1.5, None, "é"]})
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{\n  "x": [\n    1.5,\n    null,\n    "é"\n  ]\n}\n'


@pytest.mark.parametrize("text, reason", [
    ('{"a": ', "Expecting value"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"a": 1' + "0" * 5000 + "}", "an integer too long to convert"),
    ('{"test": {"mrr": Infinity}}', "Infinity is not a JSON value"),
    ('[1, NaN]', "NaN is not a JSON value"),
])
def test_read_json_turns_every_failure_into_one_user_error(tmp_path, text, reason):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(UserError, match=rf"config\.json is not valid JSON: {reason}"):
        read_json(path)


def test_read_json_of_bytes_that_are_not_utf8_is_a_user_error(tmp_path):
    (tmp_path / "m.json").write_bytes(b'{"a": "caf\xe9"}')
    with pytest.raises(UserError, match="is not valid JSON: 'utf-8' codec can't decode"):
        read_json(tmp_path / "m.json")
