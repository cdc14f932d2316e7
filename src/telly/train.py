"""The one training loop. Every task runs through `finetune`; tasks only supply data, model and loss.

Read top to bottom: check inputs → load data and model → freeze → zero-shot test → train, and at
each evaluation point (an epoch's end, or a mark of `--time-budget`) validate and keep the best
checkpoint → test the best checkpoint → write the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import resource
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_linear_schedule_with_warmup

from telly.checkpoints import (
    TrainingState, load_latest_checkpoint, remove_checkpoints, restore_rng, rng_snapshot, save_checkpoint,
)
from telly.config import AUTO, FinetuneConfig
from telly.errors import UserError
from telly.files import write_json
from telly.models.cache import SPILL_FOLDER, FrozenPrefixCache, cache_supported
from telly.models.freeze import freeze, param_report
from telly.models.layers import find_backbone
from telly.models.lora import apply_lora
from telly.models.load import resolve_model_name
from telly.tasks import get_task

BEST_CHECKPOINT = Path("best") / "model.safetensors"
AUTO_FREEZE_FOLDER = "auto-freeze"  # the brief run that chose K for --freeze auto
MAX_GRAD_NORM = 1.0

log = logging.getLogger("telly")


def finetune(config: FinetuneConfig) -> dict | None:
    """Fine-tune `config.model` on `config.task`; write `config.out`; return the metrics dict.

    Under `accelerate launch` every process trains its share of each batch; the main process alone
    writes the run folder, evaluates and returns the metrics (the others return None).
    """
    processes = PartialState(cpu=True)
    out = Path(config.out)
    # Every process sees the same answer: metrics.json is written only after training, which needs them all.
    if config.resume and (out / "metrics.json").is_file():
        check_same_settings(out, config)
        return json.loads((out / "metrics.json").read_text(encoding="utf-8")) if processes.is_main_process else None
    if not processes.is_main_process:
        log.setLevel(logging.WARNING)
        processes.wait_for_everyone()  # until the main process has prepared the run folder
        return _finetune(config, out, processes)
    existed, was_empty = out.exists(), not out.is_dir() or not any(out.iterdir())
    prepare_run_folder(out, overwrite=config.overwrite, resume=config.resume)
    processes.wait_for_everyone()
    try:
        with run_log(out / "log.txt", append=config.resume):
            return _finetune(config, out, processes)
    except UserError:
        # A new run refused at its inputs leaves nothing behind, so the corrected command just works.
        if was_empty:
            for path in out.iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            if not existed:
                out.rmdir()
        raise


def _finetune(config: FinetuneConfig, out: Path, processes: PartialState) -> dict | None:
    task_class = get_task(config.task)
    if config.resume and (out / "config.json").is_file():
        check_same_settings(out, config)
    elif processes.is_main_process:
        write_json(out / "config.json", {**dataclasses.asdict(config), "model_path": resolve_model_name(config.model)})
    auto_freeze = None
    if config.freeze == AUTO and processes.num_processes > 1:
        raise UserError("--freeze auto runs in one process; choose K with 'telly recommend', then pass --freeze K")
    if config.freeze == AUTO:
        from telly.study.recommend import Recommendation, recommend_k

        chosen = out / AUTO_FREEZE_FOLDER / "recommendation.json"
        if config.resume and chosen.is_file():
            auto_freeze = Recommendation.from_dict(json.loads(chosen.read_text(encoding="utf-8")))
        else:
            auto_freeze = recommend_k(config, out / AUTO_FREEZE_FOLDER)
            write_json(chosen, auto_freeze.to_dict())
        log.info("--freeze auto: K=%d (%s; %.1f s)", auto_freeze.k, auto_freeze.reason, auto_freeze.seconds)
        config = dataclasses.replace(config, freeze=auto_freeze.k)
    seed_everything(config.seed)

    task = task_class(config)
    train, valid, test = (task.read_split(Path(config.data), split) for split in ("train", "valid", "test"))
    train = random.Random(config.seed).sample(train, len(train))[: config.max_train_examples]
    valid, test = valid[: config.max_eval_examples], test[: config.max_eval_examples]
    log.info("data: %d train / %d valid / %d test examples from %s", len(train), len(valid), len(test), config.data)

    model, _ = build_task_model(task, config)
    num_layers = find_backbone(model).num_layers
    params = param_report(model, model.components())
    variant = f"LoRA r={config.lora_rank}" if config.method == "lora" else f"K={config.freeze}"
    log.info("model: %s, %d layers, %s; %s", config.model, num_layers, variant, params)

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    clock = TrainingClock()
    scheduler = learning_rate_schedule(optimizer, config, steps_per_epoch, clock)
    cache = prefix_cache(task, model, config, processes)

    state = load_latest_checkpoint(out, model, optimizer, scheduler) if config.resume else None
    if state is None:
        zero_shot = None
        if processes.is_main_process and not model.has_new_parts:
            zero_shot = evaluate_test(task, model, valid, test, "zero-shot")
        log.info("zero-shot test: %s", format_metrics(zero_shot) if zero_shot else "skipped (newly initialised parts)")
        state = TrainingState(zero_shot=zero_shot)
    else:
        log.info("resumed at epoch %d, step %d of %d", state.epoch, state.step_in_epoch, steps_per_epoch)
    clock.seconds_before = state.train_seconds

    while not training_done(config, state):
        model.train()
        clock.start()
        if cache is not None and not cache.filled:  # counted in the (first) epoch's time
            rng_states = rng_snapshot()  # filling draws no random numbers, but a resumed run must not depend on it
            fill_batches = tqdm(batches(list(range(len(train))), config.batch_size), desc="caching frozen layers",
                                leave=False, disable=None)
            counts = cache.fill(model, lambda: [task.loss(model, task.collate([train[i] for i in b])) for b in fill_batches])
            restore_rng(*rng_states)
            log.info("activation cache: %d sequences computed, %d reused from %s, after %.1f s", counts.computed,
                     counts.reused, cache.spill_folder, clock.since_start())
        epoch_batches = batches(epoch_order(len(train), config.seed, state.epoch), config.batch_size)
        mark_reached = False
        with cache.replaying() if cache is not None else nullcontext():
            for indices in tqdm(epoch_batches[state.step_in_epoch :], desc=progress_label(config, state),
                                leave=False, disable=None):
                state.losses_since_evaluation.append(train_step(task, model, train, indices, trainable, processes))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step_in_epoch += 1
                state.global_step += 1
                if config.time_budget is not None:
                    mark = config.time_budget * (state.evaluations_done + 1) / config.time_marks
                    mark_reached = processes_agree_on(clock.seconds >= mark, processes)
                    if mark_reached:
                        break
                if config.checkpoint_every and state.global_step % config.checkpoint_every == 0 \
                        and state.step_in_epoch < len(epoch_batches):
                    so_far = dataclasses.replace(state, epoch_seconds=state.epoch_seconds + clock.since_start(),
                                                 train_seconds=clock.seconds)
                    save_checkpoint_on_main(out, model, optimizer, scheduler, so_far, processes)
        state.epoch_seconds += clock.stop()
        state.train_seconds = clock.seconds
        epoch_finished = state.step_in_epoch == len(epoch_batches)
        if epoch_finished:
            state.epoch_durations.append(state.epoch_seconds)
        if mark_reached or (epoch_finished and config.time_budget is None):
            validate_and_keep_best(task, model, valid, state, out, processes)
        if epoch_finished:
            state.next_epoch()
        save_checkpoint_on_main(out, model, optimizer, scheduler, state, processes)

    if not processes.is_main_process:
        return None
    load_model(model, str(out / BEST_CHECKPOINT))
    test_scores = evaluate(task, model, test, "test", state.best_valid)
    log.info("test (best %s): %s", "evaluation" if config.time_budget else f"epoch {state.best_epoch}",
             format_metrics(test_scores))

    metrics = {
        "task": config.task,
        "model": config.model,
        "method": config.method,
        "freeze": config.freeze,
        "freeze_auto": auto_freeze.to_dict() if auto_freeze else None,
        "num_layers": num_layers,
        "test": test_scores,
        "zero_shot_test": state.zero_shot,
        "best_epoch": state.best_epoch,
        "selection_metric": task.selection_metric,
        "params": params.to_dict(),
        "seconds_per_epoch": float(np.mean(state.epoch_durations)) if state.epoch_durations else None,
        "epoch_seconds": state.epoch_durations,
        "time_budget": config.time_budget,
        "train_seconds": state.train_seconds,
        "steps": state.global_step,
        "epochs_trained": state.global_step / steps_per_epoch,
        "processes": processes.num_processes,
        "examples": {"train": len(train), "valid": len(valid), "test": len(test)},
        "history": state.history,
        "activation_cache": cache is not None,
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(out / "metrics.json", metrics)
    remove_checkpoints(out)  # the run is complete; metrics.json and best/ are what remains
    shutil.rmtree(out / SPILL_FOLDER, ignore_errors=True)
    return metrics


def build_task_model(task, config: FinetuneConfig):
    """`(task model, its pre-trained part)`, with LoRA adapters or the bottom K blocks frozen as configured."""
    pretrained = task.load_pretrained()
    model = task.build_model(pretrained)
    if config.method == "lora":
        targets = tuple(name for name in config.lora_targets.split(",") if name)
        apply_lora(model, pretrained, config.lora_rank, config.lora_alpha, targets)
    else:
        freeze(model, config.freeze, freeze_decoder=config.freeze_decoder)
    return model, pretrained


class TrainingClock:
    """Seconds spent training (cache filling included; evaluation and end-of-epoch checkpoints not)."""

    def __init__(self) -> None:
        self.seconds_before, self._since = 0.0, None

    def start(self) -> None:
        self._since = time.perf_counter()

    def since_start(self) -> float:
        return time.perf_counter() - self._since

    def stop(self) -> float:
        """Stop; returns the seconds since `start`."""
        lap = self.since_start()
        self.seconds_before, self._since = self.seconds_before + lap, None
        return lap

    @property
    def seconds(self) -> float:
        return self.seconds_before + (self.since_start() if self._since is not None else 0.0)


def learning_rate_schedule(optimizer, config: FinetuneConfig, steps_per_epoch: int, clock: TrainingClock):
    """Linear warm-up, then linear decay to 0 — over the run's steps, or over its time budget."""
    if config.time_budget is None:
        total_steps = config.epochs * steps_per_epoch
        return get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)

    def factor(_step: int) -> float:
        progress = min(clock.seconds / config.time_budget, 1.0)
        if progress < config.warmup_fraction:
            return progress / config.warmup_fraction
        return (1 - progress) / (1 - config.warmup_fraction)

    return LambdaLR(optimizer, factor)


def training_done(config: FinetuneConfig, state: TrainingState) -> bool:
    if config.time_budget is not None:
        return state.evaluations_done >= config.time_marks
    return state.epoch > config.epochs


def progress_label(config: FinetuneConfig, state: TrainingState) -> str:
    if config.time_budget is not None:
        return f"epoch {state.epoch} (budget {config.time_budget:g} s)"
    return f"epoch {state.epoch}/{config.epochs}"


def train_step(task, model, train, indices: list[int], trainable, processes: PartialState) -> float:
    """Forward and backward one batch; returns its loss. Gradients are clipped, not yet applied.

    With several processes each takes its share of the batch, weighted by its size, and the
    gradients and losses are summed over processes: the arithmetic of one process on the whole
    batch for losses that average over examples (in-batch negatives come from the share).
    """
    share = indices[processes.process_index :: processes.num_processes]
    loss = torch.zeros(())
    if share:
        loss = task.loss(model, task.collate([train[i] for i in share])) * (len(share) / len(indices))
        loss.backward()
    loss = loss.detach()
    if processes.num_processes > 1:
        loss = sum_over_processes(trainable, loss)
    torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    return loss.item()


def sum_over_processes(trainable, loss: torch.Tensor) -> torch.Tensor:
    """All-reduce the gradients and the loss in one message; returns the summed loss.

    Not DistributedDataParallel: tasks call the model more than once per step (queries, then
    code), which DDP's reducer does not allow; summing the gradients is the same arithmetic.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable]
    flat = torch.cat([grad.reshape(-1) for grad in grads] + [loss.reshape(1)])
    torch.distributed.all_reduce(flat)
    for parameter, grad in zip(trainable, torch.split(flat[:-1], [p.numel() for p in trainable])):
        parameter.grad = grad.view_as(parameter)
    return flat[-1]


def processes_agree_on(flag: bool, processes: PartialState) -> bool:
    """True in every process when it is true in any (each process reads its own clock)."""
    if processes.num_processes == 1:
        return flag
    vote = torch.tensor([float(flag)])
    torch.distributed.all_reduce(vote, op=torch.distributed.ReduceOp.MAX)
    return bool(vote.item())


def validate_and_keep_best(task, model, valid, state: TrainingState, out: Path, processes: PartialState) -> None:
    """At an epoch's end (or a time mark): score valid, record it, keep the best weights."""
    if processes.is_main_process:
        scores = evaluate(task, model, valid, f"valid at step {state.global_step}")
        train_loss = float(np.mean(state.losses_since_evaluation))
        state.history.append({"epoch": state.epoch, "step": state.global_step, "train_seconds": state.train_seconds,
                              "train_loss": train_loss, "valid": scores})
        log.info("epoch %d, step %d, %.1f s of training: train loss %.4f, valid %s", state.epoch, state.global_step,
                 state.train_seconds, train_loss, format_metrics(scores))
        if scores[task.selection_metric] > state.best_score:
            state.best_score, state.best_epoch, state.best_valid = scores[task.selection_metric], state.epoch, scores
            save_model_atomically(model, out / BEST_CHECKPOINT)
    state.losses_since_evaluation = []
    state.evaluations_done += 1
    processes.wait_for_everyone()


def save_checkpoint_on_main(out: Path, model, optimizer, scheduler, state: TrainingState,
                            processes: PartialState) -> None:
    if processes.is_main_process:
        save_checkpoint(out, model, optimizer, scheduler, state)


# Settings that may differ when a run is resumed: they do not change what the run computes.
RESUME_MAY_CHANGE = frozenset({"resume", "overwrite", "checkpoint_every", "eval_batch_size", "cache_memory_mb"})


def check_same_settings(out: Path, config: FinetuneConfig) -> None:
    """A resumed run must be the same computation as the interrupted one."""
    try:
        saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {out / 'config.json'} to resume: {error}") from None
    current = dataclasses.asdict(config)
    changed = [
        f"{name}: {saved.get(name)!r} -> {value!r}"
        for name, value in current.items()
        if name not in RESUME_MAY_CHANGE and saved.get(name) != value
    ]
    if changed:
        raise UserError(f"{out} was started with other settings ({'; '.join(changed)}); "
                        "resume with the same ones or choose another --out")


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The training examples' order in `epoch`: a function of seed and epoch alone, so a resumed run
    can continue mid-epoch."""
    epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed)).tolist()


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[start : start + size] for start in range(0, len(order), size)]


def save_model_atomically(model: torch.nn.Module, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    save_model(model, str(temporary))
    with open(temporary, "rb") as stream:
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def prefix_cache(task, model, config: FinetuneConfig, processes: PartialState) -> FrozenPrefixCache | None:
    """The activation cache when it applies: something frozen, the task and the model support it.

    Each process of a multi-process run caches every training sequence (its share of the batches
    changes every epoch) and spills into its own folder.
    """
    if config.freeze < 0 or config.no_cache:
        return None
    if not (task.caches_prefix and cache_supported(model)):
        log.info("activation cache: not available for this task and model; frozen layers run every step")
        return None
    spill_folder = Path(config.out) / SPILL_FOLDER
    if processes.num_processes > 1:
        spill_folder /= f"process-{processes.process_index}"
    return FrozenPrefixCache(model, config.freeze, task.tokenizer.pad_token_id, spill_folder=spill_folder,
                             memory_limit=config.cache_memory_mb * 2**20)


@torch.no_grad()
def evaluate(task, model, examples, description: str, valid_metrics: dict | None = None) -> dict[str, float]:
    model.eval()
    return task.evaluate(model, examples, description, valid_metrics)


def evaluate_test(task, model, valid, test, description: str) -> dict[str, float]:
    """Test metrics; a task that tunes something on valid (a threshold) gets valid scored first."""
    valid_metrics = evaluate(task, model, valid, f"{description} valid") if task.tunes_on_valid else None
    return evaluate(task, model, test, f"{description} test", valid_metrics)


def prepare_run_folder(out: Path, *, overwrite: bool, resume: bool = False) -> None:
    """Refuse to mix a new run with an old one's results unless asked to overwrite or resume it."""
    if out.exists() and not out.is_dir():
        raise UserError(f"run folder {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if resume and not (out / "config.json").is_file():
            raise UserError(f"{out} holds files but no config.json: not a telly run to resume")
        if not (overwrite or resume):
            raise UserError(f"run folder {out} is not empty; pass --resume to continue it, --overwrite to replace it, "
                            "or choose another --out")
    try:
        (out / BEST_CHECKPOINT.parent).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create run folder {out}: {error.strerror}") from None


@contextmanager
def run_log(path: Path, append: bool = False):
    """Send the `telly` logger to the run's log file and the console while the run lasts."""
    file_handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handlers = [file_handler, logging.StreamHandler()]
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
