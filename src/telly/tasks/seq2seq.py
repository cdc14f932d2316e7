"""The encoder–decoder machinery shared by code summarization and code generation.

Two model shapes, one interface (`encode`, `logits`, `start_id`, `end_id`):
- an encoder-only pre-trained model (BERT/RoBERTa: CodeBERT, UniXcoder, the default MiniLM) gets a
  randomly initialised Transformer decoder, as CodeXGLUE's code-to-text does: target tokens are
  embedded by the encoder's own embedding module and the LM head is tied to its word embeddings;
- an encoder–decoder pre-trained model (T5/CodeT5) keeps its own decoder and LM head.
Training is teacher forcing with cross-entropy; decoding is `beam_search`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForSeq2SeqLM, PretrainedConfig

from telly.errors import UserError
from telly.models.layers import find_backbone
from telly.tasks.base import IGNORE_INDEX, Task, TaskModel, pad_with_ignore
from telly.tasks.decoding import beam_search


@dataclass(frozen=True)
class Seq2SeqExample:
    source: str
    target: str


class EncoderWithNewDecoder(TaskModel):
    """A pre-trained encoder plus a new `num_layers`-layer Transformer decoder (CodeXGLUE code-to-text)."""

    has_new_parts = True

    def __init__(self, encoder: nn.Module, num_layers: int, start_id: int, end_id: int):
        super().__init__()
        if find_backbone(encoder).family != "bert-like":
            raise UserError(
                f"{type(encoder).__name__}: a new decoder can be put on a BERT/RoBERTa-style encoder; "
                "use an encoder-decoder model (T5/CodeT5) otherwise"
            )
        config = encoder.config
        self.encoder = encoder
        layer = nn.TransformerDecoderLayer(
            config.hidden_size, config.num_attention_heads, config.intermediate_size,
            dropout=config.hidden_dropout_prob, activation="gelu", batch_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = encoder.get_input_embeddings().weight  # tied, as in CodeXGLUE
        self.start_id, self.end_id = start_id, end_id

    def components(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder, "head": nn.ModuleList([self.dense, self.lm_head])}

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def logits(self, memory: torch.Tensor, memory_mask: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        target = self.encoder.embeddings(input_ids=prefix)
        causal = nn.Transformer.generate_square_subsequent_mask(prefix.size(1), device=target.device, dtype=target.dtype)
        hidden = self.decoder(
            target, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=memory_mask == 0
        )
        return self.lm_head(torch.tanh(self.dense(hidden)))


class PretrainedEncoderDecoder(TaskModel):
    """A pre-trained encoder–decoder (T5/CodeT5) with its own decoder and LM head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.start_id = model.config.decoder_start_token_id
        self.end_id = model.config.eos_token_id

    def components(self) -> dict[str, nn.Module]:
        return {"encoder": self.model.get_encoder(), "decoder": self.model.get_decoder(),
                "head": self.model.get_output_embeddings()}

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def logits(self, memory: torch.Tensor, memory_mask: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        return self.model(encoder_outputs=(memory,), attention_mask=memory_mask, decoder_input_ids=prefix).logits


class Seq2SeqTask(Task):
    """A task that maps a source text to a target text; subclasses read data and score predictions."""

    max_source_field: str  # config field that limits source tokens
    max_target_field: str  # config field that limits target tokens

    def pretrained_class(self, model_config: PretrainedConfig) -> type:
        return AutoModelForSeq2SeqLM if model_config.is_encoder_decoder else AutoModel

    def encoder_inputs(self, examples: Sequence[Seq2SeqExample]) -> tuple[list[str], int]:
        return [e.source for e in examples], getattr(self.config, self.max_source_field)

    def build_model(self, pretrained: nn.Module) -> TaskModel:
        if pretrained.config.is_encoder_decoder:
            model = PretrainedEncoderDecoder(pretrained)
        else:
            tokenizer = self.tokenizer
            start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
            end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
            model = EncoderWithNewDecoder(pretrained, self.config.decoder_layers, start, end)
        # Targets are framed by the model's own start and end tokens.
        self.start_id, self.end_id = model.start_id, model.end_id
        return model

    @abstractmethod
    def score(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        """The task's metrics of decoded predictions against references."""

    @property
    def max_source_len(self) -> int:
        return self.max_length(getattr(self.config, self.max_source_field))

    @property
    def max_target_len(self) -> int:
        return self.max_length(getattr(self.config, self.max_target_field))

    def collate(self, examples: Sequence[Seq2SeqExample]) -> dict[str, torch.Tensor]:
        source = self.tokenize([e.source for e in examples], self.max_source_len)
        return {"source_ids": source["input_ids"], "source_mask": source["attention_mask"],
                "target_ids": self._targets([e.target for e in examples])}

    def _targets(self, texts: Sequence[str]) -> torch.Tensor:
        """start + target tokens + end, right-padded with IGNORE_INDEX."""
        bodies = self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        rows = [[self.start_id, *body[: self.max_target_len - 2], self.end_id] for body in bodies]
        return pad_with_ignore(rows)

    def loss(self, model: TaskModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        target = batch["target_ids"]
        prefix = target[:, :-1].clamp(min=0)  # padding positions are never scored
        memory = model.encode(batch["source_ids"], batch["source_mask"])
        logits = model.logits(memory, batch["source_mask"], prefix)
        return F.cross_entropy(logits.flatten(0, 1), target[:, 1:].flatten(), ignore_index=IGNORE_INDEX)

    def evaluate(self, model: TaskModel, examples: Sequence[Seq2SeqExample], description: str, valid_metrics=None) -> dict:
        sources = [self.tokenize([e.source for e in batch], self.max_source_len) for batch in self.eval_batches(examples)]
        predictions = [text for batch in self.runtime.infer(partial(self.decode, model), sources, description)
                       for text in batch]
        return self.score(predictions, [self.round_trip(e.target) for e in examples])

    def decode(self, model: TaskModel, source: dict[str, torch.Tensor]) -> list[str]:
        """Beam-search the targets of a batch of tokenized sources."""
        k = self.config.beam_size
        memory = model.encode(source["input_ids"], source["attention_mask"]).repeat_interleave(k, dim=0)
        memory_mask = source["attention_mask"].repeat_interleave(k, dim=0)

        def step(prefix: torch.Tensor) -> torch.Tensor:
            return model.logits(memory, memory_mask, prefix)[:, -1].log_softmax(-1)

        start = source["input_ids"].new_full((len(source["input_ids"]), 1), model.start_id)
        outputs = beam_search(step, start, {model.end_id}, k, self.max_target_len - 1)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
