"""Code summarization: code → the first sentence of its docstring (CodeSearchNet format).

Metric: smoothed BLEU-4 as CodeXGLUE's code-to-text evaluator computes it.
"""

from __future__ import annotations

from pathlib import Path

from telly.data.formats import read_codesearchnet_split
from telly.metrics import smoothed_bleu4
from telly.tasks.seq2seq import Seq2SeqExample, Seq2SeqTask


def first_sentence(tokens: list[str]) -> list[str]:
    """The tokens up to and including the first full stop."""
    return tokens[: tokens.index(".") + 1] if "." in tokens else tokens


class CodeSummarizationTask(Seq2SeqTask):
    name = "code-summarization"
    selection_metric = "bleu"
    metrics = ("bleu",)
    max_source_field = "max_code_len"
    max_target_field = "max_nl_len"
    separator = "\nSummary:\n"

    def read_split(self, data_dir: Path, split: str) -> list[Seq2SeqExample]:
        records = read_codesearchnet_split(data_dir, split, required=("code_tokens", "docstring_tokens"))
        return [
            Seq2SeqExample(source=" ".join(r["code_tokens"]), target=" ".join(first_sentence(r["docstring_tokens"])))
            for r in records
        ]

    def text_metrics(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return {"bleu": smoothed_bleu4(predictions, references)}
