"""Find a model's embeddings and its ordered list of transformer blocks by inspecting its modules.

Telly-K needs to know "the embeddings" and "the bottom K blocks" of any Hugging Face model. The
families differ only in attribute names and in a few facts the rest of telly reads from the
family's row of `KNOWN_LAYOUTS` (never by testing a family's name): whether the model is a
decoder-only language model, how a task pools its states into one vector, which projections LoRA
adapts, and what a block skipped by the activation cache must hand on to the next one. A row is
checked against the model's modules, outermost first (a task model wrapping a pre-trained model is
searched through); the first module where every path of a row exists wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from telly.errors import UserError


# What a block that the activation cache skips returns in place of the real block's output: the
# model's own forward reads it the way it reads a real block's. Arguments: the hidden states to hand
# on, the block's other positional and keyword arguments, and the real first block.
StandIn = Callable[[torch.Tensor, tuple, dict, nn.Module], object]


def hidden_states_alone(hidden_states: torch.Tensor, args: tuple, kwargs: dict, first_block: nn.Module):
    """BERT, RoBERTa, GPT-2 and the Llama family: a block returns its hidden states."""
    return hidden_states


def hidden_states_in_a_tuple(hidden_states: torch.Tensor, args: tuple, kwargs: dict, first_block: nn.Module):
    """MPNet: a block returns a tuple whose first item are the hidden states (the encoder indexes it)."""
    return (hidden_states,)


def hidden_states_and_t5_position_bias(hidden_states: torch.Tensor, args: tuple, kwargs: dict, first_block: nn.Module):
    """T5: a block also returns the self-attention position bias, which the first block computes (from
    the sequence length alone) and every later block reuses, so a stand-in for the first computes it too."""
    # T5Stack calls block(hidden_states, attention_mask, position_bias, ...).
    position_bias = args[1] if len(args) > 1 else kwargs.get("position_bias")
    if position_bias is None:
        length = hidden_states.shape[1]
        position_bias = first_block.layer[0].SelfAttention.compute_bias(length, length, device=hidden_states.device)
    return hidden_states, position_bias, None


@dataclass(frozen=True)
class Layout:
    family: str
    embeddings: tuple[str, ...]  # attribute paths of the embedding modules (the first embeds the token ids)
    blocks: str  # attribute path of the nn.ModuleList of (encoder) blocks, bottom first
    decoder: str | None = None  # attribute path of a pre-trained decoder, if the family has one
    lora_targets: tuple[str, ...] = ()  # attention projections LoRA adapts by default
    encoder: str | None = None  # attribute path of the module whose forward embeds and runs the blocks (None: the root)
    stand_in: StandIn = hidden_states_alone  # what a block skipped by the activation cache returns
    decoder_only: bool = False  # a causal language model: tasks generate from it and pool its last token
    pooling: str = "mean"  # one vector per input for code search and clone detection: "mean" or "last" real token
    requires: tuple[str, ...] = ()  # other attribute paths a model of the family has (to tell families apart)


# Order matters: the first match wins.
KNOWN_LAYOUTS = (
    # MPNet (all-mpnet-base-v2): BERT-like, but its blocks return tuples and share a relative position
    # bias table of the encoder, an embedding that the frozen blocks read, so it freezes with the embeddings.
    Layout("mpnet", ("embeddings", "encoder.relative_attention_bias"), "encoder.layer", lora_targets=("q", "v"),
           stand_in=hidden_states_in_a_tuple),
    # BERT, RoBERTa (CodeBERT, GraphCodeBERT, UniXcoder), ELECTRA, XLM-R, ...
    Layout("bert-like", ("embeddings",), "encoder.layer", lora_targets=("query", "value")),
    # T5 / CodeT5 (encoder-decoder or encoder-only): K counts encoder blocks. The encoder's own
    # embedding module first (it shares `shared`'s weight, not the module): the cache hooks it.
    Layout("t5", ("encoder.embed_tokens", "shared"), "encoder.block", decoder="decoder", lora_targets=("q", "v"),
           encoder="encoder", stand_in=hidden_states_and_t5_position_bias),
    # GPT-2 / CodeGPT. The dropout on the embeddings' sum is the embeddings' own (BERT's is inside its
    # embeddings module): frozen with them, it is off while the blocks above train.
    Layout("gpt2", ("wte", "wpe", "drop"), "h", lora_targets=("c_attn",), decoder_only=True, pooling="last"),
    # The Llama family: Llama, CodeLlama, Qwen2 (Qwen2.5-Coder), Mistral, StarCoder2, Gemma, DeepSeek-Coder,
    # SmolLM2, ... Rotary position embeddings are computed once per forward from the position ids and
    # handed to every block by the model itself, so a skipped block has nothing else to hand on.
    # (An encoder of BART or Whisper also has `embed_tokens` and `layers`, but no rotary embedding.)
    Layout("llama", ("embed_tokens",), "layers", lora_targets=("q_proj", "v_proj"), decoder_only=True,
           pooling="last", requires=("rotary_emb",)),
)


@dataclass(frozen=True)
class Backbone:
    """The parts of a pre-trained model that Telly-K talks about, and its family's row."""

    layout: Layout
    embeddings: tuple[nn.Module, ...]
    blocks: nn.ModuleList
    decoder: nn.Module | None
    root: nn.Module  # the module that holds the embeddings and blocks (BertModel, T5Model, ...)
    encoder: nn.Module  # the module whose forward embeds the inputs and runs the blocks (BertModel, T5Stack)

    @property
    def family(self) -> str:
        return self.layout.family

    @property
    def num_layers(self) -> int:
        return len(self.blocks)


def find_backbone(model: nn.Module) -> Backbone:
    """Locate the embeddings, ordered blocks (and pre-trained decoder) in `model` or a module inside it."""
    for module in model.modules():
        for layout in KNOWN_LAYOUTS:
            blocks = _get_path(module, layout.blocks)
            embeddings = [_get_path(module, path) for path in layout.embeddings]
            required = [_get_path(module, path) for path in layout.requires]
            if isinstance(blocks, nn.ModuleList) and all(isinstance(m, nn.Module) for m in embeddings + required):
                decoder = _get_path(module, layout.decoder) if layout.decoder else None
                encoder = _get_path(module, layout.encoder) if layout.encoder else module
                return Backbone(layout, tuple(embeddings), blocks, decoder, module, encoder)
    known = ", ".join(layout.family for layout in KNOWN_LAYOUTS)
    raise UserError(
        f"unsupported architecture {type(model).__name__}: cannot find its embeddings and "
        f"transformer blocks (known families: {known})"
    )


def layout_of(model_config) -> Layout:
    """The row of a model of `model_config`, found on a skeleton built on the meta device (no weights):
    a task can choose which class to load before loading it."""
    from transformers import AutoModel

    with torch.device("meta"):
        skeleton = AutoModel.from_config(model_config, trust_remote_code=bool(getattr(model_config, "auto_map", None)))
    return find_backbone(skeleton).layout


def _get_path(module: nn.Module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def position_offset(model: nn.Module) -> int:
    """The first position id a model uses: RoBERTa-style embeddings count from padding_idx + 1.

    (A plain token embedding table's own padding_idx, as Llama's, only keeps that row's gradient at 0.)
    """
    embeddings = find_backbone(model).embeddings[0]
    padding_idx = None if isinstance(embeddings, nn.Embedding) else getattr(embeddings, "padding_idx", None)
    return 0 if padding_idx is None else padding_idx + 1


def max_positions(model: nn.Module) -> int | None:
    """How many tokens the model can take, or None for relative positions (T5)."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return None if limit is None else limit - position_offset(model)
