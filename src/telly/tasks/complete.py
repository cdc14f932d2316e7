"""Line-level code completion (CodeXGLUE line-level format): the code so far → the next line.

Decoder-only models (GPT-2 / CodeGPT) run as the causal language models they are. Encoder-only
models (BERT/RoBERTa: UniXcoder, CodeBERT, MiniLM) run UniXcoder-style: a causal attention mask
(`is_decoder=True`) and an LM head tied to their input embeddings. Training is next-token
prediction over the context and the line; prediction is greedy decoding until the end of the line.
Metrics: exact match and edit similarity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from telly.data.formats import read_line_completion
from telly.errors import UserError
from telly.metrics import edit_similarity, exact_match
from telly.models.layers import find_backbone, position_offset
from telly.tasks.base import IGNORE_INDEX, Task, TaskModel, pad_with_ignore
from telly.tasks.decoding import beam_search

_MARKER = re.compile(r"\s*<EOL>\s?")


@dataclass(frozen=True)
class CompletionExample:
    context: str  # real code, lines separated by "\n"
    line: str


def context_from_input(text: str) -> str:
    """CodeXGLUE's `input` ("<s> a = 1 <EOL>     b = 2 <EOL>") as the code it stands for."""
    text = text.removeprefix("<s>").removeprefix(" ").removesuffix("</s>")
    return _MARKER.sub("\n", text)


class CausalLanguageModel(TaskModel):
    def __init__(self, model: nn.Module, has_new_parts: bool):
        super().__init__()
        self.model = model
        self.has_new_parts = has_new_parts
        self.first_position = position_offset(model)

    def components(self) -> dict[str, nn.Module]:
        body = self.model.base_model
        head = [child for child in self.model.children() if child is not body]  # GPT-2's lm_head, BERT's cls
        return {"body": body, "head": nn.ModuleList(head)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Positions count real tokens only, so left padding (used when decoding) changes nothing.
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0) + self.first_position
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits


class CodeCompletionTask(Task):
    name = "code-completion"
    selection_metric = "exact_match"
    # Makes BERT/RoBERTa attend causally; decoder-only models are causal already.
    pretrained_overrides = {"is_decoder": True}
    # Rows are padded with 0, not always the tokenizer's pad token (RoBERTa's is 1).
    caches_prefix = False

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
        return CausalLanguageModel(pretrained, has_new_parts=find_backbone(pretrained).family != "gpt2")

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
        rows = [c + l[: self.line_budget - len(self.line_end)] + self.line_end for c, l in zip(contexts, lines)]
        ids = pad_with_ignore(rows)
        return {"input_ids": ids.clamp(min=0), "attention_mask": (ids != IGNORE_INDEX).long(), "labels": ids}

    def loss(self, model: CausalLanguageModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"])
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE_INDEX)

    def evaluate(self, model, examples: Sequence[CompletionExample], description: str, valid_metrics=None) -> dict:
        prompts = [self.prompts([e.context for e in batch]) for batch in self.eval_batches(examples)]
        predictions = [line for batch in self.runtime.infer(partial(self.complete, model), prompts, description)
                       for line in batch]
        references = [self.round_trip(e.line) for e in examples]
        return {"exact_match": exact_match(predictions, references), "edit_similarity": edit_similarity(predictions, references)}

    def prompts(self, contexts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The contexts as left-padded prompts: generated tokens follow each one directly."""
        contexts = self._context_ids(contexts)
        width = max(len(c) for c in contexts)
        return {"input_ids": torch.tensor([[0] * (width - len(c)) + c for c in contexts]),
                "attention_mask": torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])}

    def complete(self, model: CausalLanguageModel, prompts: dict[str, torch.Tensor]) -> list[str]:
        """Greedy completion of the next line of each prompt."""
        prompt, prompt_mask = prompts["input_ids"], prompts["attention_mask"]

        def step(generated: torch.Tensor) -> torch.Tensor:
            mask = torch.cat([prompt_mask, torch.ones_like(generated)], dim=1)
            return model(torch.cat([prompt, generated], dim=1), mask)[:, -1].log_softmax(-1)

        start = prompt.new_empty((len(prompt), 0))
        outputs = beam_search(step, start, self.end_ids, beam_size=1, max_new_tokens=self.line_budget)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).split("\n")[0].strip() for ids in outputs]
