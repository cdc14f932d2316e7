"""The machinery shared by code summarization and code generation: a source text → a target text.

Three model shapes, one interface (`loss(batch)`, `generate(inputs, end_ids, beam_size, max_new_tokens)`):
- an encoder-only pre-trained model (BERT/RoBERTa/MPNet: CodeBERT, UniXcoder, the default MiniLM)
  gets a randomly initialised Transformer decoder, as CodeXGLUE's code-to-text does: target tokens
  are embedded by the encoder's own embedding module and the LM head is tied to its word
  embeddings; it decodes by `beam_search`, keeping each layer's keys and values between steps;
- an encoder–decoder pre-trained model (T5/CodeT5) keeps its own decoder and LM head;
- a decoder-only pre-trained model (GPT-2, the Llama family) reads the source, a separator, and
  writes the target ending with its EOS token: a causal LM on prompt → target (`telly.tasks.causal`).
The encoder–decoder shapes train by teacher forcing with cross-entropy; pre-trained models decode
with transformers' `generate`.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PretrainedConfig

from telly.errors import UserError
from telly.models.layers import find_backbone, layout_of, position_offset
from telly.tasks.base import IGNORE_INDEX, Task, TaskModel, pad_with_ignore
from telly.tasks.causal import CausalLanguageModel, left_padded, prompt_target_batch
from telly.tasks.decoding import beam_search, generation_config, up_to_end


@dataclass(frozen=True)
class Seq2SeqExample:
    source: str
    target: str


class EncoderDecoder(TaskModel):
    """An encoder and a decoder trained by teacher forcing: `encode` the source, `logits` of the targets."""

    @abstractmethod
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's output states (the decoder's memory)."""

    @abstractmethod
    def logits(self, memory: torch.Tensor, memory_mask: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Next-token logits after each position of the target prefixes."""

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        target = batch["target_ids"]
        prefix = target[:, :-1].clamp(min=0)  # padding positions are never scored
        memory = self.encode(batch["source_ids"], batch["source_mask"])
        logits = self.logits(memory, batch["source_mask"], prefix)
        return F.cross_entropy(logits.flatten(0, 1), target[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


class EncoderWithNewDecoder(EncoderDecoder):
    """A pre-trained encoder plus a new `num_layers`-layer Transformer decoder (CodeXGLUE code-to-text)."""

    has_new_parts = True

    def __init__(self, encoder: nn.Module, num_layers: int, start_id: int, end_id: int):
        super().__init__()
        layout = find_backbone(encoder).layout
        if layout.decoder_only or layout.decoder is not None:
            raise UserError(
                f"{type(encoder).__name__}: a new decoder can be put on an encoder-only model (BERT/RoBERTa style); "
                "an encoder-decoder or decoder-only model generates with its own decoder"
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
        return self.head(hidden)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.dense(hidden)))

    def generate(self, source: dict[str, torch.Tensor], end_ids: Collection[int], beam_size: int,
                 max_new_tokens: int) -> list[list[int]]:
        memory = self.encode(source["input_ids"], source["attention_mask"]).repeat_interleave(beam_size, dim=0)
        memory_mask = source["attention_mask"].repeat_interleave(beam_size, dim=0)
        start = source["input_ids"].new_full((len(source["input_ids"]), 1), self.start_id)
        return beam_search(IncrementalDecoding(self, memory, memory_mask), start, end_ids, beam_size, max_new_tokens)


class IncrementalDecoding:
    """`EncoderWithNewDecoder`'s decoder one token at a time, as a beam-search step function: each
    layer's self-attention keys and values of the tokens so far are kept (and reordered with the
    beams), the cross-attention's of the memory computed once. The arithmetic of
    `nn.TransformerDecoderLayer` (post-norm) in eval mode, for the newest position only."""

    def __init__(self, model: EncoderWithNewDecoder, memory: torch.Tensor, memory_mask: torch.Tensor):
        self.model, self.layers = model, list(model.decoder.layers)
        self.first_position = position_offset(model.encoder)
        self.memory_keys_values = [self._keys_values(layer.multihead_attn, memory) for layer in self.layers]
        self.memory_mask = (memory_mask != 0)[:, None, None, :]  # (rows, 1, 1, source): where to attend
        self.keys_values: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.length = 0

    def __call__(self, tokens: torch.Tensor, beams: torch.Tensor | None) -> torch.Tensor:
        positions = torch.arange(self.length, self.length + tokens.size(1), device=tokens.device)
        x = self.model.encoder.embeddings(input_ids=tokens, position_ids=(positions + self.first_position).expand_as(tokens))
        first_call = not self.keys_values
        for index, layer in enumerate(self.layers):
            keys, values = self._keys_values(layer.self_attn, x)
            if not first_call:
                past_keys, past_values = (kept[beams] for kept in self.keys_values[index])
                keys, values = torch.cat([past_keys, keys], dim=2), torch.cat([past_values, values], dim=2)
                self.keys_values[index] = (keys, values)
            else:
                self.keys_values.append((keys, values))
            x = layer.norm1(x + self._attend(layer.self_attn, x, keys, values, is_causal=first_call))
            x = layer.norm2(x + self._attend(layer.multihead_attn, x, *self.memory_keys_values[index],
                                             mask=self.memory_mask))
            x = layer.norm3(x + layer.linear2(layer.activation(layer.linear1(x))))
        self.length += tokens.size(1)
        return self.model.head(x[:, -1]).log_softmax(-1)

    @staticmethod
    def _split_heads(attention: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), attention.num_heads, -1).transpose(1, 2)

    def _keys_values(self, attention: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, key_weight, value_weight = attention.in_proj_weight.chunk(3)
        _, key_bias, value_bias = attention.in_proj_bias.chunk(3)
        return (self._split_heads(attention, F.linear(x, key_weight, key_bias)),
                self._split_heads(attention, F.linear(x, value_weight, value_bias)))

    def _attend(self, attention: nn.MultiheadAttention, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        query_weight, query_bias = attention.in_proj_weight.chunk(3)[0], attention.in_proj_bias.chunk(3)[0]
        queries = self._split_heads(attention, F.linear(x, query_weight, query_bias))
        attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask,
                                                  is_causal=is_causal and x.size(1) > 1)
        return attention.out_proj(attended.transpose(1, 2).flatten(2))


class PretrainedEncoderDecoder(EncoderDecoder):
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

    def generate(self, source: dict[str, torch.Tensor], end_ids: Collection[int], beam_size: int,
                 max_new_tokens: int) -> list[list[int]]:
        output = self.model.generate(
            input_ids=source["input_ids"], attention_mask=source["attention_mask"],
            generation_config=generation_config(beam_size, max_new_tokens, end_ids, self.model.config.pad_token_id,
                                                decoder_start_token_id=self.start_id),
        )
        return up_to_end(output[:, 1:].tolist(), set(end_ids))  # after the decoder's start token


class Seq2SeqTask(Task):
    """A task that maps a source text to a target text; subclasses read data and score predictions."""

    max_source_field: str  # config field that limits source tokens
    max_target_field: str  # config field that limits target tokens
    #: What a decoder-only model reads between the source and the target it writes.
    separator: ClassVar[str]

    @property
    def evaluates_from_prefix_cache(self) -> bool:
        """An encoder reads each source once, whatever decodes after it. A decoder-only model is not
        served: `generate` runs its frozen blocks at every new token, which attends to their keys and
        values of the prompt; storing those (2K tensors per prompt) would spare only the prompt's first pass."""
        return not self.prompted

    def pretrained_class(self, model_config: PretrainedConfig) -> type:
        if model_config.is_encoder_decoder:
            return AutoModelForSeq2SeqLM
        return AutoModelForCausalLM if layout_of(model_config).decoder_only else AutoModel

    def encoder_inputs(self, examples: Sequence[Seq2SeqExample]) -> tuple[list[str], int]:
        return [e.source for e in examples], getattr(self.config, self.max_source_field)

    def build_model(self, pretrained: nn.Module) -> TaskModel:
        tokenizer = self.tokenizer
        self.prompted = find_backbone(pretrained).layout.decoder_only
        if self.prompted:
            model = CausalLanguageModel(pretrained)
            self.end_id = tokenizer.eos_token_id
        else:
            if pretrained.config.is_encoder_decoder:
                model = PretrainedEncoderDecoder(pretrained)
            else:
                start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
                end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
                model = EncoderWithNewDecoder(pretrained, self.config.decoder_layers, start, end)
            # Targets are framed by the model's own start and end tokens.
            self.start_id, self.end_id = model.start_id, model.end_id
        return model

    @abstractmethod
    def text_metrics(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        """The task's metrics of decoded predictions against references."""

    @property
    def max_source_len(self) -> int:
        return self.max_length(getattr(self.config, self.max_source_field))

    @property
    def max_target_len(self) -> int:
        return self.max_length(getattr(self.config, self.max_target_field))

    def collate(self, examples: Sequence[Seq2SeqExample]) -> dict[str, torch.Tensor]:
        bodies = self.tokenizer([e.target for e in examples], add_special_tokens=False, verbose=False)["input_ids"]
        if self.prompted:
            targets = [body[: self.max_target_len - 1] + [self.end_id] for body in bodies]
            return prompt_target_batch(self._prompts([e.source for e in examples]), targets)
        source = self.tokenize([e.source for e in examples], self.max_source_len)
        # start + target tokens + end, right-padded with IGNORE_INDEX.
        targets = [[self.start_id, *body[: self.max_target_len - 2], self.end_id] for body in bodies]
        return {"source_ids": source["input_ids"], "source_mask": source["attention_mask"],
                "target_ids": pad_with_ignore(targets)}

    def _prompts(self, sources: Sequence[str]) -> list[list[int]]:
        """Source tokens + the separator's, leaving room for the target within the model's positions."""
        separator = self.tokenizer(self.separator, add_special_tokens=False)["input_ids"]
        room = len(separator) + self.max_target_len
        budget = self.max_length(self.max_source_len + room) - room
        encoded = self.tokenizer(list(sources), truncation=True, max_length=budget, verbose=False)["input_ids"]
        return [ids + separator for ids in encoded]

    def loss(self, model: TaskModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.loss(batch)

    def predict(self, model: TaskModel, examples: Sequence[Seq2SeqExample], description: str,
                valid_metrics=None) -> list[str]:
        inputs = [self._inputs([e.source for e in batch]) for batch in self.eval_batches(examples)]
        return [text for batch in self.runtime.infer(partial(self.decode, model), inputs, description) for text in batch]

    def score(self, predictions: Sequence[str], examples: Sequence[Seq2SeqExample]) -> dict[str, float]:
        return self.text_metrics(list(predictions), [self.round_trip(e.target) for e in examples])

    def _inputs(self, sources: Sequence[str]) -> dict[str, torch.Tensor]:
        """What the model generates from: left-padded prompts for a decoder-only model, else the sources."""
        return left_padded(self._prompts(sources)) if self.prompted else self.tokenize(sources, self.max_source_len)

    def decode(self, model: TaskModel, inputs: dict[str, torch.Tensor]) -> list[str]:
        """Beam-search (greedy at beam size 1) the targets of a batch."""
        # The start token is not generated: an encoder–decoder writes max_target_len - 1 tokens after it.
        max_new_tokens = self.max_target_len - (0 if self.prompted else 1)
        outputs = model.generate(inputs, {self.end_id}, self.config.beam_size, max_new_tokens)
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
