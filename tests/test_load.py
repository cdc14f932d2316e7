import json

import pytest
from huggingface_hub import constants
from transformers import BertModel

from telly import UserError, load_pretrained
from telly.models.load import default_model_dir


def test_local_folder_loads_model_and_tokenizer(tiny_bert_dir, tokenizer):
    model, loaded_tokenizer = load_pretrained(str(tiny_bert_dir))
    assert isinstance(model, BertModel)
    assert model.config.num_hidden_layers == 4
    assert loaded_tokenizer("def f(x)")["input_ids"] == tokenizer("def f(x)")["input_ids"]


def test_default_resolves_to_the_packaged_model_folder():
    folder = default_model_dir()
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("bert", 6, 384)
    assert (folder / "model.safetensors").is_file()


def test_missing_local_folder(tmp_path):
    with pytest.raises(UserError, match="no such model folder"):
        load_pretrained(str(tmp_path / "nope"))


def test_folder_without_config(tmp_path):
    with pytest.raises(UserError, match="not a model folder"):
        load_pretrained(str(tmp_path))


def test_unreachable_hub_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="hub is unreachable; pass the path of a local model folder"):
        load_pretrained("microsoft/unixcoder-base-not-cached")


def test_remote_code_is_refused_without_the_flag(tiny_bert_dir, tmp_path):
    folder = tmp_path / "remote"
    folder.mkdir()
    for item in tiny_bert_dir.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    (folder / "configuration_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(UserError, match="trust_remote_code"):
        load_pretrained(str(folder))
