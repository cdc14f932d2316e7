"""`telly compare`: how much fine-tuning changed each layer — RSA and linear CKA per layer.

Both models read the same N inputs. By default, as Shi et al. compare every task on the same 5,000
CodeSearchNet Python training functions, these are one shared set of code for every run
(`shared_code`): N functions of the training files of a source corpus (the Python standard
library unless told otherwise), as their code tokens without the docstring, which each run's model
reads with its own tokenizer and code length. Alternatively (`code=None`) they are the first N
examples of a split of the run's own task, as the task's encoder reads them (code for code search,
the NL description for code generation, ...). Each layer's token representations are mean-pooled
per input (layer 0 = embedding output); RSA then L2-normalises and correlates the two
cosine-similarity matrices (Spearman), and linear CKA compares the two representation matrices
directly. Both come with 95% bootstrap intervals over the inputs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from telly.data.corpus import MAX_FILE_MB, read_split_corpus
from telly.errors import UserError
from telly.runtime import CPU, Runtime
from telly.study.representations import (
    FeatureCache,
    RunModels,
    StudyModel,
    layer_features,
    run_models,
    sequences_fingerprint,
    weights_fingerprint,
)
from telly.study.similarity import DEFAULT_RESAMPLES, MIN_INPUTS, linear_cka, rsa, similarity_intervals

MEASURES = {"rsa": rsa, "cka": linear_cka}


@dataclass(frozen=True)
class SharedCode:
    """One set of code every compared run reads (each with its own tokenizer)."""

    texts: list[str]
    description: str


def shared_code(
    sources: list[Path], language: str, inputs: int, seed: int = 0, max_file_mb: float = MAX_FILE_MB
) -> SharedCode:
    """`inputs` functions of the training files of `sources` (split as `telly data build` splits
    them, documented functions only, as CodeSearchNet's), shuffled with `seed`, as their code tokens
    joined by spaces (no docstring), as code search reads them."""
    _check_inputs(inputs)
    functions = read_split_corpus(sources, seed, language=language, max_file_mb=max_file_mb).functions("train")
    random.Random(seed).shuffle(functions)
    if len(functions) < MIN_INPUTS:
        raise UserError(f"the sources' training files hold {len(functions)} functions; the comparison needs at least {MIN_INPUTS}")
    chosen = functions[:inputs]
    where = ", ".join(map(str, sources))
    return SharedCode([" ".join(function.code_tokens) for function in chosen],
                      f"{len(chosen):,} {language} functions of the training files of {where} (seed {seed}), code "
                      "without docstrings, the same for every run")


def compare_run(
    run: Path,
    model: str | None = None,
    inputs: int = 1000,
    split: str = "test",
    data: Path | None = None,
    cache: FeatureCache | None = None,
    runtime: Runtime = CPU,
    code: SharedCode | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Per-layer RSA and CKA of the run's fine-tuned model against its pre-trained model.

    `model`, when given, must be the model the run started from. The inputs are `code`, or when
    it is None, the first `inputs` examples of `split` of the run's task; `data` replaces the run's
    data folder (when the run was made elsewhere). Each value gets a 95% bootstrap interval from
    `resamples` resamples of the inputs (0: none). Both models run on `runtime`'s device.
    """
    models = run_models(run, model, runtime)
    if code is None:
        sequences, input_set = run_inputs(models, inputs, split, data), f"the first {inputs:,} {split} examples of the run's task"
    else:
        sequences, input_set = code_inputs(models, code.texts), code.description
    cache = cache or FeatureCache(None)
    layers = [
        _pooled(study_model, sequences, cache) for study_model in (models.pretrained(), models.finetuned)
    ]
    return {
        "run": str(run),
        "task": models.config.task,
        "model": models.config.model,
        "inputs": len(sequences),
        "input_set": "task" if code is None else "code",
        "input_description": input_set,
        "layers": layer_similarities(*layers, resamples=resamples, seed=seed),
    }


def code_inputs(models: RunModels, texts: list[str]) -> list[list[int]]:
    """Token ids (no padding) of code as the run's model reads code: its tokenizer and code length."""
    task = models.task
    return task.tokenizer(texts, truncation=True, max_length=task.max_length(models.config.max_code_len))["input_ids"]


def _check_inputs(inputs: int) -> None:
    if inputs < MIN_INPUTS:
        raise UserError(f"--inputs must be at least {MIN_INPUTS}, got {inputs}")


def run_inputs(models: RunModels, inputs: int, split: str, data: Path | None = None) -> list[list[int]]:
    """Token ids (no padding) of the first `inputs` examples of a split of the run's data."""
    _check_inputs(inputs)
    task = models.task
    examples = task.read_split(Path(data or models.config.data), split)[:inputs]
    if len(examples) < MIN_INPUTS:
        raise UserError(f"the {split} split has {len(examples)} examples; the comparison needs at least {MIN_INPUTS}")
    texts, max_length = task.encoder_inputs(examples)
    return task.tokenizer(texts, truncation=True, max_length=task.max_length(max_length))["input_ids"]


def _pooled(model: StudyModel, sequences: list[list[int]], cache: FeatureCache):
    key = {"kind": "pooled", "weights": weights_fingerprint(model.encoder), "inputs": sequences_fingerprint(sequences, None)}
    return cache.get(key, lambda: layer_features(model, sequences, description=f"{model.description} layers"))["pooled"]


def layer_similarities(before, after, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> list[dict]:
    """RSA and CKA of each layer (`before` and `after`: (N, L+1, D) pooled representations), and
    with `resamples` > 0 their 95% bootstrap intervals ("rsa_interval", "cka_interval")."""
    if before.shape[:2] != after.shape[:2]:
        raise UserError(f"the two models' representations differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    rows = []
    for layer in range(before.size(1)):
        x, y = before[:, layer], after[:, layer]
        row = {"layer": layer, **{name: measure(x, y) for name, measure in MEASURES.items()}}
        if resamples:
            row |= {f"{name}_interval": interval for name, interval in similarity_intervals(x, y, resamples, seed).items()}
        rows.append(row)
    return rows


MEASURE_TITLES = {"rsa": "RSA", "cka": "linear CKA"}


def compare_markdown(comparisons: list[dict]) -> str:
    """One table per measure: a row per layer, a column per run."""
    models = sorted({report["model"] for report in comparisons})
    lines = [
        f"# How fine-tuning changed each layer of {', '.join(models)}",
        "",
        "Pre-trained vs fine-tuned representations of the same inputs; layer 0 is the embedding output; "
        "1 = unchanged. In brackets: 95% bootstrap intervals over the inputs.",
        "",
        *(f"- {_label(report)}: {report['run']}; inputs: {report['input_description']}" for report in comparisons),
    ]
    num_layers = max(len(report["layers"]) for report in comparisons)
    for name, title in MEASURE_TITLES.items():
        lines += ["", f"## {title}", "", "| layer | " + " | ".join(_label(r) for r in comparisons) + " |",
                  "|---" * (len(comparisons) + 1) + "|"]
        for layer in range(num_layers):
            cells = [_cell(r["layers"][layer], name) if layer < len(r["layers"]) else "" for r in comparisons]
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(row: dict, name: str) -> str:
    interval = row.get(f"{name}_interval")
    return f"{row[name]:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")


def compare_panels(comparisons: list[dict]) -> list:
    return [
        (f"{title}: pre-trained vs fine-tuned", title, {_label(r): [row[name] for row in r["layers"]] for r in comparisons},
         {_label(r): [row[f"{name}_interval"] for row in r["layers"]] for r in comparisons if f"{name}_interval" in r["layers"][0]})
        for name, title in MEASURE_TITLES.items()
    ]


def _label(report: dict) -> str:
    name = Path(report["run"]).name
    return report["task"] if name == report["task"] else f"{report['task']} ({name})"
