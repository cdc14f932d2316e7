"""The models the study looks at, and their layer-by-layer representations.

A `StudyModel` is the part of a model that reads the input — a pre-trained model, the same model
after a fine-tuning run (`runs/NAME/best/model.safetensors`), or a randomly initialised control of
the same architecture — with its tokenizer, on the device of its `Runtime`. `layer_features` runs it once over all inputs with
every hidden state (layer 0 = the embeddings' output) and keeps what the study needs: each
layer's mean-pooled vector per input and, optionally, the vectors at chosen token positions.
`FeatureCache` stores those tensors as safetensors keyed by the weights and inputs they came
from, so a second probe of the same model reads them instead of running the model again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save
from torch import nn
from transformers import PreTrainedTokenizerBase

from telly.config import FinetuneConfig
from telly.errors import UserError
from telly.files import atomic_open
from telly.models.load import encoder_class, load_pretrained, resolve_model_name
from telly.run_folder import BEST_CHECKPOINT, read_config
from telly.runtime import CPU, Runtime
from telly.tasks.encoders import mean_pool

if TYPE_CHECKING:
    from telly.tasks.base import Task, TaskModel


@dataclass
class StudyModel:
    encoder: nn.Module  # takes input_ids + attention_mask, returns all hidden states on request
    tokenizer: PreTrainedTokenizerBase
    description: str  # "pre-trained", "fine-tuned (runs/x)", "random init"
    runtime: Runtime = CPU  # where `encoder` is and runs


def pretrained_model(model: str, trust_remote_code: bool = False, runtime: Runtime = CPU) -> StudyModel:
    encoder, tokenizer = load_pretrained(model, trust_remote_code=trust_remote_code, model_class=encoder_class)
    return StudyModel(runtime.place(encoder).eval(), tokenizer, "pre-trained", runtime)


def control_model(model: str, seed: int, trust_remote_code: bool = False, runtime: Runtime = CPU) -> StudyModel:
    """The same architecture and tokenizer with random weights (transformers' own initialisation)."""
    encoder, tokenizer = load_pretrained(model, trust_remote_code=trust_remote_code, model_class=encoder_class)
    torch.manual_seed(seed)
    control = type(encoder)(encoder.config)
    return StudyModel(runtime.place(control).eval(), tokenizer, "random init", runtime)


@dataclass
class RunModels:
    """A finished run's fine-tuned model, the task it was trained on, and its pre-trained model on request."""

    finetuned: StudyModel  # the part that reads the input
    config: FinetuneConfig
    task: "Task"
    model: "TaskModel"  # the whole task model (head, new decoder, LoRA adapters), in eval mode
    pretrained_part: nn.Module  # the fine-tuned pre-trained model inside `model`, as the run loaded it

    def pretrained(self) -> StudyModel:
        """The model the run started from, loaded the same way (loaded only when asked for)."""
        runtime = self.task.runtime
        encoder = runtime.place(_input_reader(self.task.load_pretrained())).eval()
        return StudyModel(encoder, self.task.tokenizer, "pre-trained", runtime)


def run_models(run: Path, model: str | None = None, runtime: Runtime = CPU) -> RunModels:
    """The run's fine-tuned model, loaded into the structure the run trained (head, LoRA adapters).

    `model`, when given, must name the model the run started from.
    """
    from telly.tasks import get_task
    from telly.train import build_task_model

    config = read_config(run)
    if model is not None and resolve_model_name(model) != resolve_model_name(config.model):
        raise UserError(f"{run} fine-tuned {config.model!r}, not {model!r}")
    task = get_task(config.task)(config, runtime)
    trained, pretrained = build_task_model(task, config)
    try:
        load_model(trained, str(Path(run) / BEST_CHECKPOINT))
    except (SafetensorError, RuntimeError, OSError) as error:
        raise UserError(f"cannot load {Path(run) / BEST_CHECKPOINT}: {str(error).splitlines()[0]}") from None
    tuned = StudyModel(_input_reader(pretrained).eval(), task.tokenizer, f"fine-tuned ({Path(run).name})", runtime)
    return RunModels(tuned, config, task, trained.eval(), pretrained)


def _input_reader(model: nn.Module) -> nn.Module:
    """The part whose hidden states the study reads: T5's encoder, a causal LM's body (not its LM head)."""
    return model.get_encoder() if model.config.is_encoder_decoder else model.base_model


@torch.no_grad()
def layer_features(
    model: StudyModel,
    sequences: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]] | None = None,
    batch_size: int = 32,
    description: str = "representations",
) -> dict[str, torch.Tensor]:
    """Every layer's representations of `sequences` (token ids, no padding).

    Returns "pooled": (N, L+1, D) float32, the mean over each sequence's tokens per layer; and, when
    `positions` (token indices per sequence) are given, "tokens": (T, L+1, D) float16, the vectors
    at those positions, sequence by sequence. Sequences are batched by length to pad little.
    """
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    inputs = []
    for batch in batches:
        width = max(len(sequences[i]) for i in batch)
        inputs.append({
            "input_ids": torch.tensor([list(sequences[i]) + [pad_id] * (width - len(sequences[i])) for i in batch]),
            "attention_mask": torch.tensor([[1] * len(sequences[i]) + [0] * (width - len(sequences[i])) for i in batch]),
            "positions": [list(positions[i]) for i in batch] if positions is not None else None,
        })
    pooled: list[torch.Tensor | None] = [None] * len(sequences)
    tokens: list[torch.Tensor | None] = [None] * len(sequences)
    for batch, (batch_pooled, batch_tokens) in zip(batches, model.runtime.infer(partial(_layers, model), inputs, description)):
        for row, index in enumerate(batch):
            pooled[index] = batch_pooled[row]
            if positions is not None:
                tokens[index] = batch_tokens[row]
    features = {"pooled": torch.stack(pooled)}
    if positions is not None:
        features["tokens"] = torch.cat(tokens)
    return features


def _layers(model: StudyModel, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """One batch's pooled vectors (B, L+1, D) and, when asked for, its vectors at chosen positions."""
    attention_mask = batch["attention_mask"]
    output = model.encoder(input_ids=batch["input_ids"], attention_mask=attention_mask, output_hidden_states=True)
    hidden = torch.stack(output.hidden_states, dim=1).float()  # (B, L+1, S, D)
    mask = attention_mask[:, None, :].expand(-1, hidden.size(1), -1).reshape(-1, attention_mask.size(1))
    pooled = mean_pool(hidden.flatten(0, 1), mask).view(len(hidden), hidden.size(1), -1)
    if batch["positions"] is None:
        return pooled, None
    return pooled, [hidden[row][:, chosen].transpose(0, 1).half() for row, chosen in enumerate(batch["positions"])]


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "telly" / "features"


class FeatureCache:
    """Tensors stored in `folder` as `<key>.safetensors`; the key hashes everything they came from.

    With `folder=None` nothing is stored. A file that cannot be read is recomputed and replaced.
    """

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None

    def get(self, key_parts: dict, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self.folder is None:
            return compute()
        key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:32]
        path = self.folder / f"{key}.safetensors"
        if path.is_file():
            try:
                return load_file(path)
            except (SafetensorError, OSError):
                pass  # a damaged file: compute again below and replace it
        tensors = compute()
        try:
            with atomic_open(path, "wb") as stream:
                stream.write(save({name: tensor.contiguous() for name, tensor in tensors.items()}))
        except OSError as error:
            raise UserError(f"cannot write the feature cache in {self.folder}: {error.strerror}") from None
        return tensors


def sequences_fingerprint(sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]] | None) -> str:
    return hashlib.sha256(json.dumps([list(map(list, sequences)), positions and list(map(list, positions))]).encode()).hexdigest()
