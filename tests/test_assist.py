"""`telly complete FILE:LINE` and `telly summarize FILE:FUNCTION` on real stdlib files, decoding as the run's evaluation does."""

import json
import sysconfig
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import telly
from telly.cli import main
from telly.data import BUILDERS

EMAIL = Path(sysconfig.get_paths()["stdlib"]) / "email"
TRAINING = ["--freeze", "1", "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--max-code-len", "48",
            "--max-nl-len", "12", "--beam-size", "2", "--decoder-layers", "1", "--max-train-examples", "16",
            "--max-eval-examples", "8", "--seed", "1"]


def finetune(task, model, tmp_path):
    BUILDERS[task]([EMAIL], tmp_path / "data", seed=0)
    run = tmp_path / "run"
    assert main(["finetune", "--task", task, "--model", str(model), "--data", str(tmp_path / "data"), "--out", str(run),
                 *TRAINING]) == 0
    return run


def test_summarize_gives_the_summary_evaluation_gives_the_same_function(tiny_bert_dir, tmp_path, capsys):
    run = finetune("code-summarization", tiny_bert_dir, tmp_path)
    loaded = telly.load_run(run)
    record = json.loads((tmp_path / "data" / "test.jsonl").read_text().splitlines()[0])
    [expected] = loaded.task.predict(loaded.model, loaded.task.read_split(tmp_path / "data", "test")[:1], "test")
    capsys.readouterr()
    assert main(["summarize", str(run), f"{EMAIL / record['path']}:{record['func_name']}"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_complete_predicts_the_line_greedily_from_the_lines_above(byte_level_tokenizer, tmp_path, capsys):
    torch.manual_seed(0)
    end = byte_level_tokenizer.eos_token_id
    model = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(byte_level_tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                               bos_token_id=end, eos_token_id=end)).save_pretrained(model)
    byte_level_tokenizer.save_pretrained(model)
    run = finetune("code-completion", model, tmp_path)
    source = EMAIL / "quoprimime.py"
    line = next(number for number, text in enumerate(source.read_text().splitlines(), 1) if text.startswith("def "))
    capsys.readouterr()
    assert main(["complete", str(run), f"{source}:{line + 1}"]) == 0
    printed = capsys.readouterr().out

    # transformers' greedy search on the fine-tuned causal LM, from the tokens of the lines above
    # (the last that fit, after the start token), cut at the end of the line it writes.
    loaded = telly.load_run(run)
    task, tokenizer = loaded.task, loaded.task.tokenizer
    context = "\n".join(source.read_text().split("\n")[:line])
    budget = task.max_length(48) - task.line_budget - 1
    prompt = torch.tensor([[end] + tokenizer(context, add_special_tokens=False)["input_ids"][-budget:]])
    output = loaded.pretrained_part.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                             max_new_tokens=task.line_budget, pad_token_id=end, eos_token_id=end)
    written = tokenizer.decode(output[0, prompt.size(1):], skip_special_tokens=True)
    assert printed == written.lstrip().split("\n")[0].strip() + "\n"

