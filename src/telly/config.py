"""The settings of one fine-tuning run: one dataclass, validated where it is made.

The CLI builds its `telly finetune` options from these fields (name, type, default and `help`), so
the options and the Python API cannot drift apart.
"""

from __future__ import annotations

from argparse import ArgumentTypeError
from dataclasses import dataclass, field

from telly.errors import UserError


METHODS = ("telly", "lora")
PRECISIONS = ("no", "bf16", "fp16")
AUTO = "auto"
SIMILARITY_MEASURES = ("rsa", "cka")


def parse_freeze(value: str) -> int | str:
    """`--freeze`: an integer K, or "auto" (chosen by `telly.study.recommend`)."""
    if value == AUTO:
        return AUTO
    try:
        return int(value)
    except ValueError:
        raise ArgumentTypeError(f"expected an integer K or 'auto', got {value!r}") from None


def option(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class FinetuneConfig:
    task: str = option(None, "task name, e.g. code-search", required=True)
    data: str = option(None, "dataset folder (train/valid/test files in the task's format)", required=True)
    out: str = option(None, "run folder to write (config.json, metrics.json, log.txt, best/)", required=True)
    model: str = option("default", "hub id, local model folder, or 'default' (packaged all-MiniLM-L6-v2)")
    freeze: int | str = option(
        -1, "Telly-K: freeze embeddings + bottom K blocks; -1 = full fine-tuning; auto = choose K (see --auto-freeze-*)",
        parse=parse_freeze,
    )
    epochs: int = option(1, "training epochs")
    time_budget: float | None = option(
        None, "train for this many seconds (training time; evaluation not counted) instead of --epochs"
    )
    time_marks: int = option(4, "--time-budget: validate at this many equal fractions of the budget")
    batch_size: int = option(32, "training batch size")
    eval_batch_size: int = option(64, "evaluation batch size")
    lr: float = option(2e-5, "AdamW learning rate (linear decay to 0)")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_fraction: float = option(0.1, "fraction of training steps with linear warm-up")
    max_code_len: int = option(128, "max code tokens (longer is truncated)")
    max_nl_len: int = option(64, "max natural-language tokens (longer is truncated)")
    max_target_len: int = option(64, "max generated tokens (summarization, generation, completion)")
    beam_size: int = option(4, "beam size for summarization and generation (completion is greedy)")
    decoder_layers: int = option(6, "layers of the new Transformer decoder put on an encoder-only model")
    method: str = option("telly", "telly (freeze embeddings + bottom K blocks) or lora (PEFT adapters)")
    lora_rank: int = option(8, "LoRA rank (--method lora)")
    lora_alpha: int = option(16, "LoRA alpha (--method lora)")
    lora_targets: str = option("", "comma-separated module names LoRA adapts (default: the attention projections)")
    freeze_decoder: bool = option(False, "also freeze the pre-trained decoder blocks (T5/CodeT5)")
    no_cache: bool = option(False, "run the frozen layers every step instead of caching their output once")
    cache_memory_mb: int = option(2048, "MB of activation-cache states kept in host memory; the rest spill to OUT/activation-cache/")
    cache_device_mb: int = option(2048, "MB of activation-cache states kept on a GPU before host memory (ignored on the CPU)")
    max_train_examples: int | None = option(None, "use only the first N training examples (after shuffling by seed)")
    max_eval_examples: int | None = option(None, "use only the first N valid/test examples")
    auto_freeze_examples: int = option(256, "--freeze auto: training examples of the brief full fine-tuning")
    auto_freeze_inputs: int = option(500, "--freeze auto: validation inputs whose representations are compared")
    auto_freeze_threshold: float = option(0.9, "--freeze auto: freeze the layers whose similarity stays at least this")
    auto_freeze_measure: str = option("rsa", "--freeze auto: similarity measure, rsa or cka")
    seed: int = option(42, "random seed (same seed, same metrics)")
    device: str = option("auto", "auto (the GPU or other accelerator Accelerate would pick, else the CPU), cpu, cuda, cuda:N or mps")
    mixed_precision: str = option("no", "no, bf16 (autocast) or fp16 (autocast with loss scaling; GPU only)")
    trust_remote_code: bool = option(False, "allow the model folder's own Python code to run")
    overwrite: bool = option(False, "write into a run folder that already has results")
    resume: bool = option(False, "continue the interrupted run in --out from its last complete checkpoint")
    checkpoint_every: int = option(0, "also save a resumable checkpoint every N training steps (0: at the end of each epoch only)")

    def __post_init__(self) -> None:
        for name in ("task", "data", "out"):
            if not getattr(self, name):
                raise UserError(f"--{name.replace('_', '-')} is required")
        for name in ("epochs", "batch_size", "eval_batch_size", "max_code_len", "max_nl_len", "max_target_len",
                     "beam_size", "decoder_layers", "cache_memory_mb"):
            _require_positive(name, getattr(self, name))
        _require_positive("time_marks", self.time_marks)
        for name in ("max_train_examples", "max_eval_examples", "time_budget"):
            if getattr(self, name) is not None:
                _require_positive(name, getattr(self, name))
        if self.cache_device_mb < 0:
            raise UserError(f"--cache-device-mb must be >= 0, got {self.cache_device_mb}")
        if self.mixed_precision not in PRECISIONS:
            raise UserError(f"--mixed-precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        if self.method not in METHODS:
            raise UserError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.resume and self.overwrite:
            raise UserError("--resume continues a run and --overwrite replaces it; choose one")
        if self.checkpoint_every < 0:
            raise UserError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if isinstance(self.freeze, str) and self.freeze != AUTO:
            try:
                self.freeze = parse_freeze(self.freeze)
            except ArgumentTypeError as error:
                raise UserError(f"--freeze: {error}") from None
        _require_positive("auto_freeze_examples", self.auto_freeze_examples)
        if self.auto_freeze_inputs < 3:
            raise UserError(f"--auto-freeze-inputs must be at least 3, got {self.auto_freeze_inputs}")
        if not -1 <= self.auto_freeze_threshold <= 1:
            raise UserError(f"--auto-freeze-threshold must be in [-1, 1], got {self.auto_freeze_threshold}")
        if self.auto_freeze_measure not in SIMILARITY_MEASURES:
            raise UserError(f"--auto-freeze-measure must be one of {', '.join(SIMILARITY_MEASURES)}, got {self.auto_freeze_measure!r}")
        if self.method == "lora" and (self.freeze != -1 or self.freeze_decoder):
            raise UserError("--freeze and --freeze-decoder belong to --method telly; LoRA freezes all pre-trained weights")
        _require_positive("lora_rank", self.lora_rank)
        _require_positive("lora_alpha", self.lora_alpha)
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"--warmup-fraction must be in [0, 1), got {self.warmup_fraction}")


def _require_positive(name: str, value: int) -> None:
    if value <= 0:
        raise UserError(f"--{name.replace('_', '-')} must be > 0, got {value}")
