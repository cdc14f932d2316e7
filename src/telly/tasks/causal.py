"""A causal language model trained on prompt → target: line completion, and summarization and
generation on a decoder-only model.

Each training row is the prompt's tokens followed by the target's; the loss is next-token
cross-entropy on the target's tokens only. Prediction continues each prompt with transformers'
`generate` (greedy or beam search, with the model's key/value cache). Prompts are padded on the
left for generation, rows on the right for training; either way positions count real tokens only,
so padding changes nothing.
"""

from __future__ import annotations

from typing import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from telly.models.layers import find_backbone, position_offset
from telly.tasks.base import IGNORE_INDEX, TaskModel, pad_with_ignore
from telly.tasks.decoding import generation_config, up_to_end
from telly.tasks.encoders import real_token_positions


class CausalLanguageModel(TaskModel):
    """A pre-trained causal LM (GPT-2, the Llama family), or an encoder with a causal mask and an LM head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # An encoder run as a causal LM gets an LM head that sentence-embedding checkpoints do not ship.
        self.has_new_parts = not find_backbone(model).layout.decoder_only
        self.first_position = position_offset(model)

    def components(self) -> dict[str, nn.Module]:
        body = self.model.base_model
        head = [child for child in self.model.children() if child is not body]  # GPT-2's lm_head, BERT's cls
        return {"body": body, "head": nn.ModuleList(head)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = real_token_positions(attention_mask, self.first_position)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token cross-entropy where the labels are set (the target's tokens)."""
        logits = self(batch["input_ids"], batch["attention_mask"])
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE_INDEX)

    def generate(self, prompts: dict[str, torch.Tensor], end_ids: Collection[int], beam_size: int,
                 max_new_tokens: int, stop: StoppingCriteria | None = None) -> list[list[int]]:
        """The continuation of each left-padded prompt, up to and including its first end token (or
        until `stop` says a row is done)."""
        prompt_ids, prompt_mask = prompts["input_ids"], prompts["attention_mask"]
        output = self.model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask,
            position_ids=real_token_positions(prompt_mask, self.first_position),
            # Finished rows are filled with an end token, cut off below.
            generation_config=generation_config(beam_size, max_new_tokens, end_ids, pad_id=min(end_ids)),
            stopping_criteria=StoppingCriteriaList([stop] if stop else []),
        )
        return up_to_end(output[:, prompt_ids.size(1) :].tolist(), set(end_ids))


def prompt_target_batch(prompts: Sequence[list[int]], targets: Sequence[list[int]]) -> dict[str, torch.Tensor]:
    """Training rows prompt + target, right-padded; labels only on the target's tokens."""
    ids = pad_with_ignore([prompt + target for prompt, target in zip(prompts, targets)])
    labels = pad_with_ignore([[IGNORE_INDEX] * len(prompt) + target for prompt, target in zip(prompts, targets)])
    return {"input_ids": ids.clamp(min=0), "attention_mask": (ids != IGNORE_INDEX).long(), "labels": labels}


def left_padded(prompts: Sequence[list[int]]) -> dict[str, torch.Tensor]:
    """Prompts padded on the left, so that generated tokens follow each one directly."""
    width = max(len(prompt) for prompt in prompts)
    return {"input_ids": torch.tensor([[0] * (width - len(prompt)) + prompt for prompt in prompts]),
            "attention_mask": torch.tensor([[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts])}
