"""`telly predict RUN --data DIR --split test --out FILE`: a run's predictions in the files CodeXGLUE's
evaluators read, one line per example (per query for code search), in the split's order:

- code-search: JSON lines `{"url": query's url, "answers": [candidate ids, best first]}` (the
  AdvTest / CodeSearchNet evaluator's predictions): a url is the record's where every record has a
  distinct one, else its line number; a candidate's id is the records' `idx` where every record has
  one, else its url;
- clone-detection: `idx1<TAB>idx2<TAB>label` (BigCloneBench), at the threshold chosen on valid;
- code-summarization: `idx<TAB>summary` (code-to-text; idx = the example's line number);
- code-generation (CONCODE) and code-completion (line level): the prediction alone.

Code search and summarization also get the answers their evaluators read, FILE.gold (`{"url", "idx"}`
per query; `idx<TAB>reference`); the other evaluators read the data set's own test files.

Texts are written on one line: a summary's or generated code's whitespace runs become one space,
which their metrics do not see. The metrics telly reports are computed from the file as written.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from telly.data.formats import read_bigclonebench, read_codesearchnet_split
from telly.errors import UserError
from telly.files import atomic_write_text
from telly.run_folder import read_metrics
from telly.runtime import Runtime
from telly.tasks.base import Task
from telly.use.export import load_run


class PredictionFile(ABC):
    """How one task's predictions are written as lines, and read back."""

    def keys(self, data: Path, split: str, count: int) -> list:
        """What identifies each of the first `count` examples in the file (default: its line number)."""
        return list(range(count))

    @abstractmethod
    def lines(self, predictions: Sequence, keys: list) -> list[str]: ...

    @abstractmethod
    def parse(self, lines: list[str], keys: list) -> Sequence:
        """The predictions, in the form `Task.predict` gives them, of the lines `lines` wrote."""

    def gold_lines(self, examples: Sequence, keys: list) -> list[str] | None:
        """The evaluator's answers file (FILE.gold) where the data set holds none in its format."""
        return None


class RankedCandidates(PredictionFile):
    def keys(self, data, split, count):
        """(the query's url, the candidate's id) per record."""
        records = read_codesearchnet_split(data, split)[:count]
        urls = [record.get("url") for record in records]
        if not all(urls) or len(set(urls)) < len(urls):  # telly's own data sets have no urls
            urls = list(range(count))
        candidates = [record["idx"] for record in records] if all("idx" in record for record in records) else urls
        return list(zip(urls, candidates))

    def lines(self, predictions, keys):
        return [json.dumps({"url": url, "answers": [keys[index][1] for index in ranking]})
                for (url, _), ranking in zip(keys, predictions)]

    def parse(self, lines, keys):
        position = {candidate: index for index, (_, candidate) in enumerate(keys)}
        return [[position[candidate] for candidate in json.loads(line)["answers"]] for line in lines]

    def gold_lines(self, examples, keys):
        """`{"url", "idx"}` per query: its own code's id."""
        return [json.dumps({"url": url, "idx": candidate}) for url, candidate in keys]


class ClonePairLabels(PredictionFile):
    def keys(self, data, split, count):
        return [(first, second) for first, second, _ in read_bigclonebench(data, split).pairs[:count]]

    def lines(self, predictions, keys):
        return [f"{first}\t{second}\t{int(label)}" for (first, second), label in zip(keys, predictions)]

    def parse(self, lines, keys):
        return np.array([int(line.split("\t")[2]) for line in lines])


class IndexedTexts(PredictionFile):
    def lines(self, predictions, keys):
        return [f"{index}\t{' '.join(text.split())}" for index, text in zip(keys, predictions)]

    def parse(self, lines, keys):
        return [line.partition("\t")[2] for line in lines]

    def gold_lines(self, examples, keys):
        """`idx<TAB>reference summary`, as code-to-text's gold file."""
        return self.lines([example.target for example in examples], keys)


class Texts(PredictionFile):
    def __init__(self, single_spaced: bool):
        self.single_spaced = single_spaced  # False: the text is a line already, its spaces are scored

    def lines(self, predictions, keys):
        return [" ".join(text.split()) if self.single_spaced else text for text in predictions]

    def parse(self, lines, keys):
        return lines


PREDICTION_FILES: dict[str, PredictionFile] = {
    "code-search": RankedCandidates(),
    "clone-detection": ClonePairLabels(),
    "code-summarization": IndexedTexts(),
    "code-generation": Texts(single_spaced=True),
    "code-completion": Texts(single_spaced=False),
}


def predict_to_file(run: Path, data: Path | None, split: str, out: Path, runtime: Runtime) -> dict[str, float]:
    """Write the run's predictions on `split` of `data` (default: the run's data) to `out`; return
    the task's metrics computed from the file as written. A run evaluated on its first N examples
    (--max-eval-examples) predicts the same N."""
    metrics = read_metrics(run)
    loaded = load_run(run, runtime)
    task: Task = loaded.task
    data = Path(data or loaded.config.data)
    examples = task.read_split(data, split)[: loaded.config.max_eval_examples]
    # Clone detection decides at the threshold the run chose on valid (it is in the test metrics).
    valid_metrics = metrics.test if task.tunes_on_valid else None
    with torch.no_grad():
        predictions = task.predict(loaded.model, examples, split, valid_metrics)
    file = PREDICTION_FILES[task.name]
    keys = file.keys(data, split, len(examples))
    gold = file.gold_lines(examples, keys)
    if gold is not None:
        atomic_write_text(gold_path(out), "".join(line + "\n" for line in gold))
    atomic_write_text(out, "".join(line + "\n" for line in file.lines(predictions, keys)))
    return score_file(task, out, examples, keys)


def gold_path(out: Path) -> Path:
    return out.with_name(out.name + ".gold")


def score_file(task: Task, path: Path, examples: Sequence, keys: list) -> dict[str, float]:
    """The task's metrics of the predictions in `path` (written by `predict_to_file`)."""
    with open(path, encoding="utf-8", newline="") as stream:  # a line may hold a carriage return
        lines = stream.read().split("\n")[:-1]
    if len(lines) != len(examples):
        raise UserError(f"{path} has {len(lines)} lines for {len(examples)} examples")
    return task.score(PREDICTION_FILES[task.name].parse(lines, keys), examples)
