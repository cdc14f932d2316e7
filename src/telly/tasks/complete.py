"""Line-level code completion (CodeXGLUE line-level format): the code so far → the next line.

Decoder-only models (GPT-2 / CodeGPT, the Llama family) run as the causal language models they are.
Encoder-only models (BERT/RoBERTa: UniXcoder, CodeBERT, MiniLM) run UniXcoder-style: a causal
attention mask (`is_decoder=True`) and an LM head tied to their input embeddings. The prompt is the
context, the target the line and its end; training is next-token prediction on the line's tokens
(`telly.tasks.causal`); prediction is greedy decoding with `generate` until the end of the line.
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
from transformers import AutoModelForCausalLM, PretrainedConfig

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
        self.line_end, self.end_ids = self._line_ends()
        return CausalLanguageModel(pretrained)

    def _line_ends(self) -> tuple[list[int], set[int]]:
        """The tokens that end a training line, and every token at which decoding stops.

        A tokenizer that can write a newline ends lines with it, and decoding stops at any token
        whose text holds one (GPT-2 has many, such as ")\n"); an uncased WordPiece cannot, so its
        separator token marks the end of the line instead.
        """
        tokenizer = self.tokenizer
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        end = {tokenizer.eos_token_id, tokenizer.sep_token_id} - {None}
        if newline and tokenizer.decode(newline) == "\n":
            texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
            return newline, end | {i for i, text in enumerate(texts) if "\n" in text}
        line_end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        return [line_end], end

    def _context_ids(self, contexts: Sequence[str]) -> list[list[int]]:
        """Start token + the context's last tokens (the nearest code matters most)."""
        budget = self.max_length(self.config.max_code_len) - self.line_budget - len(self.start_ids)
        texts = [context + "\n" for context in contexts]
        encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [self.start_ids + ids[-budget:] for ids in encoded]

    @property
    def line_budget(self) -> int:
        """Tokens for the completed line (with its end); at most half of what the model can take."""
        return min(self.config.max_nl_len, self.max_length(self.config.max_code_len) // 2)

    def collate(self, examples: Sequence[CompletionExample]) -> dict[str, torch.Tensor]:
        contexts = self._context_ids([e.context for e in examples])
        lines = self.tokenizer([e.line for e in examples], add_special_tokens=False, verbose=False)["input_ids"]
        return prompt_target_batch(contexts, [line[: self.line_budget - len(self.line_end)] + self.line_end
                                              for line in lines])

    def loss(self, model: CausalLanguageModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.loss(batch)

    def evaluate(self, model, examples: Sequence[CompletionExample], description: str, valid_metrics=None) -> dict:
        prompts = [left_padded(self._context_ids([e.context for e in batch])) for batch in self.eval_batches(examples)]
        predictions = [line for batch in self.runtime.infer(partial(self.complete, model), prompts, description)
                       for line in batch]
        references = [self.round_trip(e.line) for e in examples]
        return {"exact_match": exact_match(predictions, references), "edit_similarity": edit_similarity(predictions, references)}

    def complete(self, model: CausalLanguageModel, prompts: dict[str, torch.Tensor]) -> list[str]:
        """Greedy completion of the next line of each (left-padded) prompt."""
        outputs = model.generate(prompts, self.end_ids, beam_size=1, max_new_tokens=self.line_budget)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).split("\n")[0].strip() for ids in outputs]
