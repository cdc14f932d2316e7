"""`telly complete RUN FILE:LINE` and `telly summarize RUN FILE:FUNCTION`: a generative run on a real
source file, decoding as the run's evaluation did (the task's own `predict`).

- complete: the code of FILE above LINE is the context (the task keeps its last tokens, up to the end
  of its last line) and the prediction is line LINE;
- summarize: FUNCTION (its qualified name, `Class.method`, or its name when that is unique) is read
  from FILE by the language's extractor and summarised from its code tokens, as training read them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from telly.data import detect_language, language_named
from telly.errors import UserError
from telly.runtime import Runtime
from telly.tasks.complete import CompletionExample
from telly.tasks.seq2seq import Seq2SeqExample
from telly.use.export import RunModels, load_run


def complete_line(run: Path, file: Path, line: int, runtime: Runtime) -> str:
    """What the run predicts for line `line` (1-based) of `file`, from the lines above it."""
    lines = read_source(file).split("\n")
    if not 1 <= line <= len(lines) + 1:
        raise UserError(f"{file} has {len(lines)} lines; LINE must be in 1..{len(lines) + 1}, got {line}")
    loaded = generative_run(run, "code-completion", "complete", runtime)
    context = "\n".join(lines[: line - 1])
    return predict_one(loaded, CompletionExample(context=context, line=""))


def summarize_function(run: Path, file: Path, function: str, language: str | None, runtime: Runtime) -> str:
    """The run's summary of `function` in `file`."""
    language = language or detect_language([file])
    if language is None:
        raise UserError(f"cannot tell the language of {file} from its name; pass --language")
    found = language_named(language).extract_functions(read_source(file), file.name, require_docstring=False)
    chosen = [f for f in found if f.func_name == function] or [f for f in found if f.name == function]
    if len(chosen) != 1:
        names = ", ".join(f.func_name for f in found[:8]) + (", …" if len(found) > 8 else "")
        why = "several functions are named" if chosen else "no function named"
        raise UserError(f"{why} {function!r} in {file} (its functions: {names or 'none'}); name it as Class.method")
    loaded = generative_run(run, "code-summarization", "summarize", runtime)
    return predict_one(loaded, Seq2SeqExample(source=" ".join(chosen[0].code_tokens), target=""))


def generative_run(run: Path, task: str, command: str, runtime: Runtime) -> RunModels:
    loaded = load_run(run, runtime)
    if loaded.config.task != task:
        raise UserError(f"telly {command} needs a {task} run; {run} fine-tuned for {loaded.config.task}")
    return loaded


def predict_one(loaded: RunModels, example) -> str:
    with torch.no_grad():
        [prediction] = loaded.task.predict(loaded.model, [example], loaded.config.task)
    return prediction


def read_source(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"no such file: {file}") from None
    except UnicodeDecodeError:
        raise UserError(f"{file} is not UTF-8 text") from None
