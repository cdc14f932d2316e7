"""Find a model's embeddings and its ordered list of transformer blocks by inspecting its modules.

Telly-K needs to know "the embeddings" and "the bottom K blocks" of any Hugging Face model. The
families differ only in attribute names, so a short table of known layouts is checked against the
model's modules, outermost first (a task model wrapping a pre-trained model is searched through);
the first module whose block container is an `nn.ModuleList` wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from telly.errors import UserError


@dataclass(frozen=True)
class Layout:
    family: str
    embeddings: tuple[str, ...]  # attribute paths of the embedding modules
    blocks: str  # attribute path of the nn.ModuleList of (encoder) blocks, bottom first
    decoder: str | None = None  # attribute path of a pre-trained decoder, if the family has one
    lora_targets: tuple[str, ...] = ()  # attention projections LoRA adapts by default
    encoder: str | None = None  # attribute path of the module whose forward embeds and runs the blocks (None: the root)


# Order matters: the first match wins.
KNOWN_LAYOUTS = (
    # BERT, RoBERTa (CodeBERT, GraphCodeBERT, UniXcoder), ELECTRA, XLM-R, ...
    Layout("bert-like", ("embeddings",), "encoder.layer", lora_targets=("query", "value")),
    # T5 / CodeT5 (encoder-decoder or encoder-only): K counts encoder blocks. The encoder's own
    # embedding module first (it shares `shared`'s weight, not the module): the cache hooks it.
    Layout("t5", ("encoder.embed_tokens", "shared"), "encoder.block", decoder="decoder", lora_targets=("q", "v"),
           encoder="encoder"),
    # GPT-2 / CodeGPT
    Layout("gpt2", ("wte", "wpe"), "h", lora_targets=("c_attn",)),
)


@dataclass(frozen=True)
class Backbone:
    """The parts of a pre-trained model that Telly-K talks about."""

    family: str
    embeddings: tuple[nn.Module, ...]
    blocks: nn.ModuleList
    decoder: nn.Module | None
    lora_targets: tuple[str, ...]
    root: nn.Module  # the module that holds the embeddings and blocks (BertModel, T5Model, ...)
    encoder: nn.Module  # the module whose forward embeds the inputs and runs the blocks (BertModel, T5Stack)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)


def find_backbone(model: nn.Module) -> Backbone:
    """Locate the embeddings, ordered blocks (and pre-trained decoder) in `model` or a module inside it."""
    for module in model.modules():
        for layout in KNOWN_LAYOUTS:
            blocks = _get_path(module, layout.blocks)
            embeddings = [_get_path(module, path) for path in layout.embeddings]
            if isinstance(blocks, nn.ModuleList) and all(isinstance(e, nn.Module) for e in embeddings):
                decoder = _get_path(module, layout.decoder) if layout.decoder else None
                encoder = _get_path(module, layout.encoder) if layout.encoder else module
                return Backbone(layout.family, tuple(embeddings), blocks, decoder, layout.lora_targets, module, encoder)
    known = ", ".join(layout.family for layout in KNOWN_LAYOUTS)
    raise UserError(
        f"unsupported architecture {type(model).__name__}: cannot find its embeddings and "
        f"transformer blocks (known families: {known})"
    )


def _get_path(module: nn.Module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def position_offset(model: nn.Module) -> int:
    """The first position id a model uses: RoBERTa-style embeddings count from padding_idx + 1."""
    padding_idx = getattr(find_backbone(model).embeddings[0], "padding_idx", None)
    return 0 if padding_idx is None else padding_idx + 1


def max_positions(model: nn.Module) -> int | None:
    """How many tokens the model can take, or None for relative positions (T5)."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return None if limit is None else limit - position_offset(model)
