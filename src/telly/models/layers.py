"""Find a model's embeddings and its ordered list of transformer blocks by inspecting its modules.

Telly-K needs to know "the embeddings" and "the bottom K blocks" of any Hugging Face model. The
families differ only in attribute names, so a short table of known layouts is checked against the
model's (base) modules; the first layout whose block container is an `nn.ModuleList` wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from telly.errors import UserError


@dataclass(frozen=True)
class Layout:
    family: str
    embeddings: tuple[str, ...]  # attribute paths of the embedding modules
    blocks: str  # attribute path of the nn.ModuleList of blocks, bottom first


# Order matters: the first match wins. Paths are relative to the model's base model.
KNOWN_LAYOUTS = (
    # BERT, RoBERTa (CodeBERT, GraphCodeBERT, UniXcoder), ELECTRA, XLM-R, ...
    Layout("bert-like", ("embeddings",), "encoder.layer"),
    # T5 / CodeT5 (encoder-decoder or encoder-only): K counts encoder blocks.
    Layout("t5", ("shared", "encoder.embed_tokens"), "encoder.block"),
    # GPT-2 / CodeGPT
    Layout("gpt2", ("wte", "wpe"), "h"),
)


@dataclass(frozen=True)
class Backbone:
    """The parts of a pre-trained model that Telly-K talks about."""

    family: str
    embeddings: tuple[nn.Module, ...]
    blocks: nn.ModuleList

    @property
    def num_layers(self) -> int:
        return len(self.blocks)


def find_backbone(model: nn.Module) -> Backbone:
    """Locate the embeddings and ordered blocks of `model` (or of the model it wraps)."""
    for root in _candidate_roots(model):
        for layout in KNOWN_LAYOUTS:
            blocks = _get_path(root, layout.blocks)
            embeddings = [_get_path(root, path) for path in layout.embeddings]
            if isinstance(blocks, nn.ModuleList) and all(isinstance(e, nn.Module) for e in embeddings):
                return Backbone(layout.family, tuple(embeddings), blocks)
    known = ", ".join(layout.family for layout in KNOWN_LAYOUTS)
    raise UserError(
        f"unsupported architecture {type(model).__name__}: cannot find its embeddings and "
        f"transformer blocks (known families: {known})"
    )


def _candidate_roots(model: nn.Module) -> list[nn.Module]:
    """The model itself, the base model it wraps (BertForMaskedLM.bert), a task model's `.encoder`."""
    roots = [model]
    for name in ("base_model", "encoder"):
        candidate = getattr(model, name, None)
        if isinstance(candidate, nn.Module) and candidate is not model:
            roots.append(candidate)
    return roots


def _get_path(module: nn.Module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module
