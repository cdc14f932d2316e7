"""A run folder's layout and its metrics: written by the loop, read by report, sweep and the study.

    runs/NAME/
      config.json              the FinetuneConfig the run was started with
      metrics.json             `RunMetrics`, written once the run has finished
      log.txt                  what the run printed
      best/model.safetensors   the best validation point's weights (the task model's state dict)
      checkpoints/             resumable state while the run is unfinished (telly.checkpoints)
      activation-cache/k<K>/   spilled activation-cache shards while the run is unfinished
      auto-freeze/             the brief run that chose K, and recommendation.json (--freeze auto)
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from telly.config import AUTO, FinetuneConfig
from telly.errors import UserError
from telly.files import read_json, remove_temporaries, removed_on_failure, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"
BEST_CHECKPOINT = Path("best") / "model.safetensors"
SPILL_FOLDER = "activation-cache"
AUTO_FREEZE_FOLDER = "auto-freeze"
RECOMMENDATION_FILE = "recommendation.json"  # in AUTO_FREEZE_FOLDER

# Settings that may differ when a run is resumed: they do not change what the run computes.
RESUME_MAY_CHANGE = frozenset({"resume", "overwrite", "checkpoint_every", "eval_batch_size", "cache_memory_mb",
                               "cache_device_mb", "device"})

log = logging.getLogger("telly")


@dataclass
class RunMetrics:
    """What a finished run measured (metrics.json). Optional fields are absent from older runs."""

    task: str
    model: str
    method: str
    freeze: int  # the K trained with (-1: full fine-tuning; the chosen K for --freeze auto)
    selection_metric: str
    test: dict[str, float]
    params: dict  # ParamReport.to_dict()
    zero_shot_test: dict[str, float] | None = None  # None when the task adds newly initialised parts
    seed: int | None = None
    freeze_auto: dict | None = None  # how --freeze auto chose K
    num_layers: int | None = None
    best_epoch: int = 0
    seconds_per_epoch: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)  # of each finished epoch
    time_budget: float | None = None
    train_seconds: float | None = None
    steps: int | None = None
    epochs_trained: float | None = None
    processes: int = 1
    examples: dict[str, int] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # one entry per evaluation point
    stopped_early: bool = False  # --patience ended the run before its epochs or time budget
    progressive: list[dict] | None = None  # --freeze progressive: each K it grew to, with step and time; [] if none
    activation_cache: bool = False
    pooling: str | None = None  # how code search / clone detection pooled token states: "mean" or "last"
    device: str | None = None
    device_name: str | None = None
    precision: str = "no"
    peak_rss_mb: float | None = None
    peak_device_memory_mb: float | None = None  # CUDA only

    @property
    def selection_score(self) -> float:
        return self.test[self.selection_metric]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "RunMetrics":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in saved.items() if name in known})


def read_metrics(folder: Path) -> RunMetrics:
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        raise UserError(f"{folder} is not a finished run (no {METRICS_FILE})")
    try:
        return RunMetrics.from_dict(read_json(path))
    except (TypeError, AttributeError) as error:
        raise UserError(f"{path} is not a telly metrics file: {error}") from None


def is_finished(folder: Path) -> bool:
    return (Path(folder) / METRICS_FILE).is_file()


def read_config(folder: Path) -> FinetuneConfig:
    """The configuration of a finished run (config.json, metrics.json and the best checkpoint);
    a run started with `--freeze auto` gets the K it chose."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"no such run folder: {folder}")
    for needed in (CONFIG_FILE, METRICS_FILE, BEST_CHECKPOINT):
        if not (folder / needed).is_file():
            raise UserError(f"{folder} is not a finished run (no {needed})")
    try:
        config = FinetuneConfig.from_dict(read_json(folder / CONFIG_FILE))
    except (TypeError, AttributeError) as error:
        raise UserError(f"{folder / CONFIG_FILE} is not a run configuration: {error}") from None
    if config.freeze == AUTO:
        config = dataclasses.replace(config, freeze=read_metrics(folder).freeze)
    return config


def write_config(folder: Path, config: FinetuneConfig, model_path: str) -> None:
    write_json(Path(folder) / CONFIG_FILE, {**dataclasses.asdict(config), "model_path": model_path})


def check_same_settings(folder: Path, config: FinetuneConfig) -> None:
    """A resumed run must be the same computation as the interrupted one."""
    path = Path(folder) / CONFIG_FILE
    try:
        # Settings added since the run started read as their defaults.
        saved = FinetuneConfig.from_dict(read_json(path)).to_flat()
    except (OSError, TypeError, AttributeError) as error:
        raise UserError(f"cannot read {path} to resume: {error}") from None
    changed = [
        f"{name}: {saved[name]!r} -> {value!r}"
        for name, value in config.to_flat().items()
        if name not in RESUME_MAY_CHANGE and saved[name] != value
    ]
    if changed:
        raise UserError(f"{folder} was started with other settings ({'; '.join(changed)}); "
                        "resume with the same ones or choose another --out")


def prepare_run_folder(out: Path, *, overwrite: bool, resume: bool = False) -> None:
    """Refuse to mix a new run with an old one's results unless asked to overwrite or resume it."""
    if out.exists() and not out.is_dir():
        raise UserError(f"run folder {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if resume and not (out / CONFIG_FILE).is_file():
            raise UserError(f"{out} holds files but no {CONFIG_FILE}: not a telly run to resume")
        if not (overwrite or resume):
            raise UserError(f"run folder {out} is not empty; pass --resume to continue it, --overwrite to replace it, "
                            "or choose another --out")
    try:
        (out / BEST_CHECKPOINT.parent).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create run folder {out}: {error.strerror}") from None


@contextmanager
def opened_run(out: Path, config: FinetuneConfig, processes, model_path: str):
    """The run folder of `config`, ready to train into while the block runs: prepared by the main
    process (the others wait for it), its log open, its config.json written — or, with --resume,
    checked against the one there. A new run that ends before its first checkpoint, for whatever
    reason, leaves nothing behind."""
    from telly.checkpoints import has_checkpoint  # torch: not for the light commands that read run folders

    if not processes.is_main_process:
        log.setLevel(logging.WARNING)
        processes.wait_for_everyone()  # until the main process has prepared the run folder
        if config.resume and (out / CONFIG_FILE).is_file():
            check_same_settings(out, config)
        yield
        return
    with removed_on_failure(out, worth_keeping=has_checkpoint):
        prepare_run_folder(out, overwrite=config.overwrite, resume=config.resume)
        processes.wait_for_everyone()
        with run_log(out / LOG_FILE, append=config.resume):
            if config.resume and (out / CONFIG_FILE).is_file():
                check_same_settings(out, config)
                remove_unfinished_writes(out)
            else:
                write_config(out, config, model_path)
            yield


def remove_unfinished_writes(out: Path) -> None:
    """Remove what writes that a kill interrupted left in the run folder (a best model's
    temporary file is as large as the model): when a run resumes, and when it finishes."""
    for folder in (out, out / BEST_CHECKPOINT.parent, out / SPILL_FOLDER):
        remove_temporaries(folder)


@contextmanager
def run_log(path: Path, append: bool = False):
    """Send the `telly` logger to `path` (and to the console, unless an enclosing run_log does) while the block runs."""
    file_handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handlers = [file_handler]
    if not any(type(handler) is logging.StreamHandler for handler in log.handlers):
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
