"""Code generation: natural language (+ signature) → code (CONCODE format).

Metrics: corpus BLEU-4 and exact match, as CodeXGLUE's text-to-code evaluator reports them.
"""

from __future__ import annotations

from pathlib import Path

from telly.data.formats import read_concode
from telly.metrics import corpus_bleu4, exact_match
from telly.tasks.seq2seq import Seq2SeqExample, Seq2SeqTask


class CodeGenerationTask(Seq2SeqTask):
    name = "code-generation"
    selection_metric = "bleu"
    metrics = ("bleu", "exact_match")
    max_source_field = "max_nl_len"
    max_target_field = "max_code_len"
    separator = "\n"  # a decoder-only model writes the body on the line after the signature

    def read_split(self, data_dir: Path, split: str) -> list[Seq2SeqExample]:
        return [Seq2SeqExample(source=r["nl"], target=r["code"]) for r in read_concode(data_dir, split)]

    def text_metrics(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return {"bleu": corpus_bleu4(predictions, references), "exact_match": exact_match(predictions, references)}
