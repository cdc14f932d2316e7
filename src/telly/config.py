"""The settings of one fine-tuning run: one frozen dataclass, validated where it is made.

The options of one method or feature are grouped in a dataclass of their own, as PEFT groups a
method's options in its config: `LoraOptions`, `AutoFreezeOptions`, `CacheOptions`,
`TimeBudgetOptions`. The CLI builds its options from these fields (name, type, default, `help`),
so the options and the Python API cannot drift apart: a group's field `rank` of `lora` becomes
`--lora-rank` (a field may name its own flag), and `flat_fields` lists them all.
"""

from __future__ import annotations

import dataclasses
import math
from argparse import ArgumentTypeError
from dataclasses import dataclass, field

from telly.errors import UserError

FULL_FINETUNING = -1  # --freeze -1: nothing frozen
AUTO = "auto"  # --freeze auto: K chosen by a brief run (telly.study.recommend)
PROGRESSIVE = "progressive"  # --freeze progressive: K grows during training (telly.models.progressive)
METHODS = ("telly", "lora")
PRECISIONS = ("no", "bf16", "fp16")
SIMILARITY_MEASURES = ("rsa", "cka")
# The largest integer setting, as NumPy's seeds (32-bit) allow; the Rust tokenizers overflow at
# 2**64 and torch at 2**63, and argparse lets any size through.
INT_LIMIT = 2**32 - 1
# The shortest --max-*-len: a start and an end token ([CLS] and [SEP], <s> and </s>) and two of the
# text's (completion gives half to the line to complete, with its end).
MIN_SEQUENCE_LEN = 4


def parse_freeze(value: str) -> int | str:
    """`--freeze`: an integer K, "auto" or "progressive"."""
    if value in (AUTO, PROGRESSIVE):
        return value
    try:
        return int(value)
    except ValueError:
        raise ArgumentTypeError(f"expected an integer K, 'auto' or 'progressive', got {value!r}") from None


def option(default, help: str, **extra):
    """A setting: its default, its help text, and optionally `flag` (its own option name), `parse`
    (how the CLI reads it) or `required`."""
    return field(default=default, metadata={"help": help, **extra})


def group(options_class):
    return field(default_factory=options_class, metadata={"group": True})


@dataclass(frozen=True)
class LoraOptions:
    """`--method lora`: PEFT's low-rank adapters; every pre-trained weight frozen."""

    rank: int = option(8, "LoRA rank (--method lora)")
    alpha: int = option(16, "LoRA alpha (--method lora)")
    targets: str = option("", "comma-separated module names LoRA adapts (default: the family's attention projections)")

    def __post_init__(self) -> None:
        check_numbers(_options_of(self))
        _require_positive("lora_rank", self.rank)
        _require_positive("lora_alpha", self.alpha)

    @property
    def target_modules(self) -> tuple[str, ...]:
        return tuple(name for name in self.targets.split(",") if name)


@dataclass(frozen=True)
class AutoFreezeOptions:
    """`--freeze auto`: fine-tune briefly, then freeze the layers that stayed similar."""

    examples: int = option(256, "--freeze auto: training examples of the brief full fine-tuning")
    inputs: int = option(500, "--freeze auto: validation inputs whose representations are compared")
    threshold: float = option(0.9, "--freeze auto: freeze the layers whose similarity stays at least this")
    measure: str = option("rsa", "--freeze auto: similarity measure, rsa or cka")

    def __post_init__(self) -> None:
        check_numbers(_options_of(self))
        _require_positive("auto_freeze_examples", self.examples)
        if self.inputs < 3:
            raise UserError(f"--auto-freeze-inputs must be at least 3, got {self.inputs}")
        if not -1 <= self.threshold <= 1:
            raise UserError(f"--auto-freeze-threshold must be in [-1, 1], got {self.threshold}")
        if self.measure not in SIMILARITY_MEASURES:
            raise UserError(f"--auto-freeze-measure must be one of {', '.join(SIMILARITY_MEASURES)}, got {self.measure!r}")


@dataclass(frozen=True)
class ProgressiveOptions:
    """`--freeze progressive`: start with every layer trainable and freeze the bottom blocks once
    their gradients change least (AutoFreeze's rule)."""

    every: int = option(0, "--freeze progressive: measure the blocks' gradients over intervals of N training steps "
                           "(0: a quarter of an epoch)")
    percentile: float = option(50.0, "--freeze progressive: freeze the bottom blocks whose gradient norm's rate of "
                                     "change over an interval is at most this percentile of the trainable blocks' "
                                     "rates (AutoFreeze's median: 50)")

    def __post_init__(self) -> None:
        check_numbers(_options_of(self))
        if self.every < 0:
            raise UserError(f"--progressive-every must be >= 0, got {self.every}")
        if not 0 < self.percentile <= 100:
            raise UserError(f"--progressive-percentile must be in (0, 100], got {self.percentile:g}")

    def interval(self, steps_per_epoch: int) -> int:
        return self.every or max(1, steps_per_epoch // 4)


@dataclass(frozen=True)
class CacheOptions:
    """The frozen-prefix activation cache of Telly-K (K >= 0)."""

    enabled: bool = option(True, "run the frozen layers every step instead of caching their output once",
                           flag="--no-cache")
    memory_mb: int = option(2048, "MB of activation-cache states kept in host memory; the rest spill to "
                                  "OUT/activation-cache/")
    device_mb: int = option(2048, "MB of activation-cache states kept on a GPU before host memory (ignored on the CPU)")

    def __post_init__(self) -> None:
        check_numbers(_options_of(self))
        _require_positive("cache_memory_mb", self.memory_mb)
        if self.device_mb < 0:
            raise UserError(f"--cache-device-mb must be >= 0, got {self.device_mb}")


@dataclass(frozen=True)
class TimeBudgetOptions:
    """`--time-budget S`: train for S seconds of training time instead of a number of epochs."""

    seconds: float | None = option(None, "train for this many seconds (training time; evaluation not counted) "
                                         "instead of --epochs", flag="--time-budget")
    marks: int = option(4, "--time-budget: validate at this many equal fractions of the budget", flag="--time-marks")

    def __post_init__(self) -> None:
        check_numbers(_options_of(self))
        if self.seconds is not None:
            _require_positive("time_budget", self.seconds)
        _require_positive("time_marks", self.marks)

    @property
    def enabled(self) -> bool:
        return self.seconds is not None


@dataclass(frozen=True)
class FinetuneConfig:
    task: str = option(None, "task name, e.g. code-search", required=True)
    data: str = option(None, "dataset folder (train/valid/test files in the task's format)", required=True)
    out: str = option(None, "run folder to write (config.json, metrics.json, log.txt, best/)", required=True)
    model: str = option("default", "hub id, local model folder, a .gguf file, 'default' (packaged all-MiniLM-L6-v2) "
                                   "or 'smollm2' (packaged SmolLM2-135M, a Llama decoder)")
    freeze: int | str = option(
        FULL_FINETUNING, "Telly-K: freeze embeddings + bottom K blocks; -1 = full fine-tuning; auto = choose K "
        "(see --auto-freeze-*); progressive = freeze blocks during training (see --progressive-*)", parse=parse_freeze,
        metavar="K|auto|progressive",
    )
    epochs: int = option(1, "training epochs")
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
    freeze_decoder: bool = option(False, "also freeze the pre-trained decoder blocks (T5/CodeT5)")
    max_train_examples: int | None = option(None, "use only the first N training examples (after shuffling by seed)")
    max_eval_examples: int | None = option(None, "use only the first N valid/test examples")
    seed: int = option(42, "random seed (same seed, same metrics)")
    device: str = option("auto", "auto (the GPU or other accelerator Accelerate would pick, else the CPU), cpu, cuda, "
                                 "cuda:N or mps")
    mixed_precision: str = option("no", "no, bf16 (autocast) or fp16 (autocast with loss scaling; GPU only)")
    trust_remote_code: bool = option(False, "allow the model folder's own Python code to run")
    overwrite: bool = option(False, "write into a run folder that already has results")
    resume: bool = option(False, "continue the interrupted run in --out from its last complete checkpoint")
    select_by: str | None = option(None, "the valid metric that picks the best evaluation and that --patience watches "
                                         "(default: the task's: mrr, f1, bleu or exact_match)")
    patience: int = option(0, "stop when the valid score has not improved for N evaluations in a row; the best "
                                  "checkpoint is tested (0: train to the end)")
    checkpoint_every: int = option(0, "also save a resumable checkpoint every N training steps (0: at the end of each "
                                      "epoch only)")
    lora: LoraOptions = group(LoraOptions)
    auto_freeze: AutoFreezeOptions = group(AutoFreezeOptions)
    progressive: ProgressiveOptions = group(ProgressiveOptions)
    cache: CacheOptions = group(CacheOptions)
    time_budget: TimeBudgetOptions = group(TimeBudgetOptions)

    def __post_init__(self) -> None:
        for name in ("task", "data", "out"):
            if not getattr(self, name):
                raise UserError(f"--{name.replace('_', '-')} is required")
        check_seed(self.seed)
        check_numbers(_options_of(self))
        for name in ("epochs", "batch_size", "eval_batch_size", "beam_size", "decoder_layers"):
            _require_positive(name, getattr(self, name))
        for name in ("max_code_len", "max_nl_len", "max_target_len"):
            if getattr(self, name) < MIN_SEQUENCE_LEN:
                raise UserError(f"--{name.replace('_', '-')} must be at least {MIN_SEQUENCE_LEN} (room for the "
                                f"tokenizer's start and end tokens and some text), got {getattr(self, name)}")
        for name in ("max_train_examples", "max_eval_examples"):
            if getattr(self, name) is not None:
                _require_positive(name, getattr(self, name))
        if not (self.freeze in (AUTO, PROGRESSIVE) or isinstance(self.freeze, int) and not isinstance(self.freeze, bool)):
            raise UserError(f"--freeze: expected an integer K, 'auto' or 'progressive', got {self.freeze!r}")
        if self.mixed_precision not in PRECISIONS:
            raise UserError(f"--mixed-precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        if self.method not in METHODS:
            raise UserError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.resume and self.overwrite:
            raise UserError("--resume continues a run and --overwrite replaces it; choose one")
        if self.patience < 0:
            raise UserError(f"--patience must be >= 0, got {self.patience}")
        if self.checkpoint_every < 0:
            raise UserError(f"--checkpoint-every must be >= 0, got {self.checkpoint_every}")
        if self.method == "lora" and (self.freeze != FULL_FINETUNING or self.freeze_decoder):
            raise UserError("--freeze and --freeze-decoder belong to --method telly; LoRA freezes all pre-trained weights")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"--warmup-fraction must be in [0, 1), got {self.warmup_fraction}")

    def to_flat(self) -> dict:
        """Every setting by its flat name (`lora_rank`, `cache_memory_mb`, ...), as `flat_fields` names them."""
        return {name: getattr(getattr(self, group) if group else self, option.name)
                for name, group, option in flat_fields()}

    @classmethod
    def from_flat(cls, values: dict) -> "FinetuneConfig":
        """The config of flat settings (argparse's, or an older run's config.json); absent ones default."""
        values = {LEGACY_NAMES.get(name, name): value for name, value in values.items()}
        top, groups = {}, {}
        for name, group, option in flat_fields():
            if name in values:
                (groups.setdefault(group, {}) if group else top)[option.name] = values[name]
        if "cache_enabled" not in values and "no_cache" in values:  # config.json before the groups
            groups.setdefault("cache", {})["enabled"] = not values["no_cache"]
        groups = {name: GROUPS[name](**options) for name, options in groups.items()}
        return cls(**top, **groups)

    @classmethod
    def from_dict(cls, saved: dict) -> "FinetuneConfig":
        """The config as config.json holds it (groups nested; an older, flat file too). Unknown keys are ignored."""
        flat = {}
        for name, value in saved.items():
            if isinstance(value, dict) and name in GROUPS:
                flat |= {f"{name}_{key}": item for key, item in value.items()}
            else:
                flat[name] = value
        return cls.from_flat(flat)


GROUPS = {f.name: f.default_factory for f in dataclasses.fields(FinetuneConfig) if f.metadata.get("group")}
# config.json of runs made before the groups: flat names whose flat name is now another.
LEGACY_NAMES = {"time_budget": "time_budget_seconds", "time_marks": "time_budget_marks"}


def flat_fields(config_class=FinetuneConfig) -> list[tuple[str, str | None, dataclasses.Field]]:
    """`(flat name, group or None, field)` of every setting: a group's field `rank` of `lora` is `lora_rank`."""
    flat = []
    for outer in dataclasses.fields(config_class):
        if outer.metadata.get("group"):
            flat += [(f"{outer.name}_{inner.name}", outer.name, inner) for inner in dataclasses.fields(outer.default_factory)]
        else:
            flat.append((outer.name, None, outer))
    return flat


def flag(name: str, option: dataclasses.Field) -> str:
    """The command-line flag of a setting: its own (`--no-cache`), or its flat name with dashes."""
    return option.metadata.get("flag") or "--" + name.replace("_", "-")


def check_numbers(values: dict[str, object]) -> None:
    """Every number among `values` (by option name) is finite and every integer at most INT_LIMIT in
    size: argparse reads "nan", "inf" and 10**30 as numbers, and nothing after it expects them.
    Ranges that depend on the setting are checked where it is used."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
            raise UserError(f"{name} must be at most {INT_LIMIT:,} in size, got {value}")


def _options_of(settings) -> dict[str, object]:
    """The values of a settings dataclass by their command-line flags."""
    group = next((name for name, options_class in GROUPS.items() if isinstance(settings, options_class)), None)
    return {flag(f"{group}_{option.name}" if group else option.name, option): getattr(settings, option.name)
            for option in dataclasses.fields(settings)}


def check_seed(seed: int) -> int:
    """`seed` if NumPy can take it (0..2**32 - 1); a user mistake otherwise."""
    if not 0 <= seed <= INT_LIMIT:
        raise UserError(f"--seed must be in 0..{INT_LIMIT}, got {seed}")
    return seed


def _require_positive(name: str, value: float) -> None:
    if not value > 0:  # NaN too
        raise UserError(f"--{name.replace('_', '-')} must be > 0, got {value}")
