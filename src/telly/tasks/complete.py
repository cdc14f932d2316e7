"""Line-level code completion (CodeXGLUE line-level format): the code so far → the next line.

Decoder-only models (GPT-2 / CodeGPT, the Llama family) run as the causal language models they are.
Encoder-only models (BERT/RoBERTa: UniXcoder, CodeBERT, MiniLM) run UniXcoder-style: a causal
attention mask (`is_decoder=True`) and an LM head tied to their input embeddings. The prompt is the
context up to the end of its last line, without the newline; the target is a newline, the line and
its end. A byte-level BPE writes a newline and the next line's indentation as one token ("\n   "),
so a prompt ending in a bare newline would tell a pre-trained decoder that no indentation follows.
Training is next-token prediction on the target's tokens (`telly.tasks.causal`); prediction is
greedy decoding with `generate` until the line has ended; the prediction is that line, stripped.
Metrics: exact match and edit similarity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, StoppingCriteria

from telly.data.formats import read_line_completion
from telly.errors import UserError
from telly.metrics import edit_similarity, exact_match
from telly.tasks.base import Task
from telly.tasks.causal import CausalLanguageModel, left_padded, prompt_target_batch

_MARKER = re.compile(r"\s*<EOL>\s?")


@dataclass(frozen=True)
class CompletionExample:
    context: str  # real code, lines separated by "\n"
    line: str


def context_from_input(text: str) -> str:
    """CodeXGLUE's `input` ("<s> a = 1 <EOL>     b = 2 <EOL>") as the code it stands for."""
    text = text.removeprefix("<s>").removeprefix(" ").removesuffix("</s>")
    return _MARKER.sub("\n", text)


class CodeCompletionTask(Task):
    name = "code-completion"
    selection_metric = "exact_match"
    metrics = ("exact_match", "edit_similarity")
    # Makes BERT/RoBERTa attend causally; decoder-only models are causal already.
    pretrained_overrides = {"is_decoder": True}

    def pretrained_class(self, model_config: PretrainedConfig) -> type:
        if model_config.is_encoder_decoder:
            raise UserError(
                "code-completion runs decoder-only (GPT-2/CodeGPT) or encoder-only (BERT/RoBERTa) "
                f"models, not the encoder-decoder {model_config.model_type}"
            )
        return AutoModelForCausalLM

    def read_split(self, data_dir: Path, split: str) -> list[CompletionExample]:
        return [
            CompletionExample(context_from_input(r["input"]), r["gt"].strip())
            for r in read_line_completion(data_dir, split)
        ]

    def encoder_inputs(self, examples: Sequence[CompletionExample]) -> tuple[list[str], int]:
        return [e.context for e in examples], self.config.max_code_len

    def build_model(self, pretrained: nn.Module) -> CausalLanguageModel:
        # A GPT-2 LM head is the tied embedding matrix; a BERT LM head also has a transform layer
        # that sentence-embedding checkpoints do not ship, so zero-shot scores would mean little.
        tokenizer = self.tokenizer
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        self.start_ids = [] if start is None else [start]
        self.line_end = self._line_end()
        self.end_ids = {tokenizer.eos_token_id, tokenizer.sep_token_id} - {None}
        return CausalLanguageModel(pretrained)

    def _line_end(self) -> list[int]:
        """The tokens that end a training line: a newline where the tokenizer can write one; an
        uncased WordPiece cannot, so its separator token marks the end of the line instead."""
        tokenizer = self.tokenizer
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        if newline and tokenizer.decode(newline) == "\n":
            return newline
        return [tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id]

    def _context_ids(self, contexts: Sequence[str]) -> list[list[int]]:
        """Start token + the context's last tokens (the nearest code matters most), up to the end of
        its last line without the newline."""
        budget = self.max_length(self.config.max_code_len) - self.line_budget - len(self.start_ids)
        texts = [context.removesuffix("\n") for context in contexts]
        encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [self.start_ids + ids[-budget:] for ids in encoded]

    @property
    def line_budget(self) -> int:
        """Tokens for the completed line (with its end); at most half of what the model can take."""
        return min(self.config.max_nl_len, self.max_length(self.config.max_code_len) // 2)

    def collate(self, examples: Sequence[CompletionExample]) -> dict[str, torch.Tensor]:
        contexts = self._context_ids([e.context for e in examples])
        lines = self.tokenizer(["\n" + e.line for e in examples], add_special_tokens=False, verbose=False)["input_ids"]
        return prompt_target_batch(contexts, [line[: self.line_budget - len(self.line_end)] + self.line_end
                                              for line in lines])

    def loss(self, model: CausalLanguageModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.loss(batch)

    def predict(self, model, examples: Sequence[CompletionExample], description: str, valid_metrics=None) -> list[str]:
        prompts = [left_padded(self._context_ids([e.context for e in batch])) for batch in self.eval_batches(examples)]
        return [line for batch in self.runtime.infer(partial(self.complete, model), prompts, description) for line in batch]

    def score(self, predictions: Sequence[str], examples: Sequence[CompletionExample]) -> dict[str, float]:
        references = [self.round_trip(e.line) for e in examples]
        return {"exact_match": exact_match(predictions, references), "edit_similarity": edit_similarity(predictions, references)}

    def complete(self, model: CausalLanguageModel, prompts: dict[str, torch.Tensor]) -> list[str]:
        """Greedy completion of the next line of each (left-padded) prompt."""
        line_ended = LineEnded(self.tokenizer, prompts["input_ids"].size(1))
        outputs = model.generate(prompts, self.end_ids, beam_size=1, max_new_tokens=self.line_budget, stop=line_ended)
        return [first_line(self.tokenizer.decode(ids, skip_special_tokens=True)) for ids in outputs]


def first_line(text: str) -> str:
    """The line a completion writes: after the newline (and indentation) that starts it, up to the next."""
    return text.lstrip().split("\n")[0].strip()


class LineEnded(StoppingCriteria):
    """`generate` stops a row once the line it writes has ended: a newline after some text (the newline
    and indentation that start the line do not count)."""

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        written = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor(["\n" in text.lstrip() for text in written], device=input_ids.device)
