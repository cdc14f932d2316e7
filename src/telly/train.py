"""The one training loop. Every task runs through it; tasks only supply data, model and loss.

`train` reads top to bottom: set up → resume or start → train, validating and keeping the best
checkpoint at each evaluation point → test the best checkpoint and write metrics.json. When to
validate and when to stop is the run's `StopPolicy` (whole epochs, or a time budget); where
tensors live and in what precision is its `Runtime`; what the run folder holds is
`telly.run_folder`. K is an integer here: `--freeze auto` is resolved before (`telly.pipeline`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from telly.checkpoints import (
    TrainingState, load_latest_checkpoint, remove_checkpoints, restore_rng, rng_snapshot, save_checkpoint,
)
from telly.config import FULL_FINETUNING, PROGRESSIVE, FinetuneConfig
from telly.errors import UserError, interrupts_remembered, raise_if_interrupted
from telly.files import atomic_path, write_json
from telly.models.cache import FrozenPrefixCache
from telly.models.freeze import freeze, param_report
from telly.models.layers import find_backbone
from telly.models.lora import apply_lora
from telly.models.progressive import block_gradient_norms, blocks_to_freeze
from telly.run_folder import BEST_CHECKPOINT, METRICS_FILE, SPILL_FOLDER, RunMetrics, remove_unfinished_writes
from telly.runtime import Runtime
from telly.tasks import get_task
from telly.tasks.base import Task, TaskModel

SPLITS = ("train", "valid", "test")
MAX_GRAD_NORM = 1.0

log = logging.getLogger("telly")


@dataclass
class Training:
    """Everything one run trains with, set up once by `set_up`."""

    config: FinetuneConfig
    out: Path
    processes: object  # accelerate's PartialState: which process this is, of how many
    runtime: Runtime
    task: Task
    model: TaskModel
    train: list
    valid: list
    test: list
    num_layers: int
    steps_per_epoch: int
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    policy: StopPolicy
    clock: TrainingClock
    cache: FrozenPrefixCache | None
    # --freeze progressive: each block's gradient norm summed over the interval in progress
    current_norms: list[float] | None = None
    blocks: list[torch.nn.Module] = field(default_factory=list)  # the backbone's, found once

    @property
    def progressive_interval(self) -> int:
        return self.config.progressive.interval(self.steps_per_epoch)


def train(config: FinetuneConfig, out: Path, processes, runtime: Runtime,
          freeze_auto: dict | None = None) -> RunMetrics | None:
    """Fine-tune as `config` says into the prepared run folder `out`.

    Returns the metrics in the main process, None in the others of an `accelerate launch` run.
    `freeze_auto` is how `--freeze auto` chose `config.freeze`, recorded in the metrics.
    """
    run = set_up(config, Path(out), processes, runtime)
    state = resume_or_start(run)
    with interrupts_remembered():
        while not (run.policy.finished(state) or state.stopped_early):
            train_until_evaluation(run, state)
    if not processes.is_main_process:
        return None
    return test_and_write(run, state, freeze_auto)


def set_up(config: FinetuneConfig, out: Path, processes, runtime: Runtime) -> Training:
    """Data, model (frozen as configured, on the device), optimizer, schedule and activation cache."""
    seed_everything(config.seed)
    task = get_task(config.task)(config, runtime)
    train, valid, test = (task.read_split(Path(config.data), split) for split in SPLITS)
    train = random.Random(config.seed).sample(train, len(train))[: config.max_train_examples]
    valid, test = valid[: config.max_eval_examples], test[: config.max_eval_examples]
    log.info("data: %d train / %d valid / %d test examples from %s", len(train), len(valid), len(test), config.data)

    model, _ = build_task_model(task, config)
    backbone = find_backbone(model)
    num_layers = backbone.num_layers
    params = param_report(model, model.components())
    variant = f"LoRA r={config.lora.rank}" if config.method == "lora" else f"K={config.freeze}"
    log.info("model: %s, %d layers, %s; %s", config.model, num_layers, variant, params)
    log.info("device: %s (%s), mixed precision: %s", runtime.device, runtime.device_name, runtime.precision)

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    clock = TrainingClock()
    policy = stop_policy(config, steps_per_epoch)
    scheduler = policy.schedule(optimizer, config.warmup_fraction, clock)
    cache = prefix_cache(model, config, processes, frozen_at_start(config))
    runtime.reset_peak_memory()
    return Training(config, out, processes, runtime, task, model, train, valid, test, num_layers,
                    steps_per_epoch, trainable, optimizer, scheduler, runtime.grad_scaler(), policy, clock, cache,
                    [0.0] * num_layers if config.freeze == PROGRESSIVE else None, list(backbone.blocks))


def build_task_model(task: Task, config: FinetuneConfig):
    """`(task model, its pre-trained part)` on the task's device, with LoRA adapters or the bottom K
    blocks frozen as configured."""
    pretrained = task.load_pretrained()
    model = task.build_model(pretrained)
    if config.method == "lora":
        apply_lora(model, pretrained, config.lora.rank, config.lora.alpha, config.lora.target_modules)
    else:
        freeze(model, frozen_at_start(config), freeze_decoder=config.freeze_decoder)
    task.runtime.place(model)
    return model, pretrained


def frozen_at_start(config: FinetuneConfig) -> int:
    """K at the start of training: a progressive run starts with every layer trainable."""
    return FULL_FINETUNING if config.freeze == PROGRESSIVE else config.freeze


def resume_or_start(run: Training) -> TrainingState:
    """The state of the last checkpoint with `--resume`; else a new state, with zero-shot test metrics."""
    state = None
    if run.config.resume:
        state = load_latest_checkpoint(run.out, run.model, run.optimizer, run.scheduler, run.scaler)
    if state is None:
        zero_shot = None
        if run.processes.is_main_process and not run.model.has_new_parts:
            zero_shot = evaluate_test(run, "zero-shot")
        log.info("zero-shot test: %s", format_metrics(zero_shot) if zero_shot else "skipped (newly initialised parts)")
        state = TrainingState(zero_shot=zero_shot, frozen_k=FULL_FINETUNING if run.current_norms is not None else None)
    else:
        log.info("resumed at epoch %d, step %d of %d", state.epoch, state.step_in_epoch, run.steps_per_epoch)
        if run.current_norms is not None:  # progressive: the blocks frozen so far stay frozen, cached
            freeze(run.model, state.frozen_k, freeze_decoder=run.config.freeze_decoder)
            run.current_norms = state.current_norms
            run.cache = prefix_cache(run.model, run.config, run.processes, state.frozen_k)
    run.clock.seconds_before = state.train_seconds
    return state


def train_until_evaluation(run: Training, state: TrainingState) -> None:
    """Train from where `state` stands to the end of the epoch, or to an evaluation point the policy
    sets inside it; validate there if the policy says so; save a checkpoint."""
    run.model.train()
    run.clock.start()
    fill_cache(run)
    epoch_batches = batches(epoch_order(len(run.train), run.config.seed, state.epoch), run.config.batch_size)
    evaluation_due = False
    # Redrawn after every step whatever its speed (a training step is never too fast to draw).
    progress = tqdm(epoch_batches[state.step_in_epoch :], desc=run.policy.label(state), unit="step", leave=False,
                    disable=None, mininterval=0, miniters=1)
    for indices in progress:
        raise_if_interrupted()
        record_step(run, state, train_step(run, indices))
        if run.current_norms is not None and state.global_step % run.progressive_interval == 0:
            freeze_blocks_that_stopped_changing(run, state)
        progress.set_postfix(loss=f"{state.losses_since_evaluation[-1]:.4f}")  # drawn at once: steps are slow
        if run.policy.validates_mid_epoch:
            evaluation_due = processes_agree_on(run.policy.evaluation_due(state, run.clock.seconds), run)
            if evaluation_due:
                break
        if run.config.checkpoint_every and state.global_step % run.config.checkpoint_every == 0 \
                and state.step_in_epoch < len(epoch_batches):
            save_checkpoint_on_main(run, dataclasses.replace(
                state, epoch_seconds=state.epoch_seconds + run.clock.since_start(), train_seconds=run.clock.seconds))
    state.epoch_seconds += run.clock.stop()
    state.train_seconds = run.clock.seconds
    epoch_finished = state.step_in_epoch == len(epoch_batches)
    if epoch_finished:
        state.epoch_durations.append(state.epoch_seconds)
    if evaluation_due or (epoch_finished and not run.policy.validates_mid_epoch):
        validate_and_keep_best(run, state)
    if epoch_finished:
        state.next_epoch()
    save_checkpoint_on_main(run, state)


def record_step(run: Training, state: TrainingState, loss: float) -> None:
    """Count a finished step and its loss. A loss that is not finite ends the run: it diverged, and
    every step after it would train on NaN."""
    if not math.isfinite(loss):
        raise UserError(f"training diverged: the loss is {loss} at step {state.global_step + 1} (epoch {state.epoch}); "
                        f"start again with a lower --lr than {run.config.lr:g}")
    state.losses_since_evaluation.append(loss)
    state.step_in_epoch += 1
    state.global_step += 1


def fill_cache(run: Training) -> None:
    """Store the frozen prefix's output of every training sequence, once (the time counts as training)."""
    if run.cache is None or run.cache.filled:
        return
    counts = run.cache.fill(run.model, training_pass(run, "caching frozen layers"))
    log.info("activation cache: %d sequences computed, %d stored already (in %s or by an evaluation), after %.1f s",
             counts.computed, counts.reused, run.cache.spill_folder, run.clock.since_start())


def cache_newly_frozen_blocks(run: Training, k: int) -> None:
    """--freeze progressive, the bottom `k` blocks just frozen: the first freeze fills the activation
    cache; a later one grows it, running only the newly frozen blocks over the states it holds."""
    if run.cache is None:
        run.cache = prefix_cache(run.model, run.config, run.processes, k)
        fill_cache(run)
        return
    below = run.cache.k
    counts = run.cache.grow(run.model, k, training_pass(run, f"caching blocks {below}-{k - 1}"))
    log.info("activation cache grown from K=%d to K=%d: blocks %d-%d ran over %d stored sequences (%d stored already)",
             below, k, below, k - 1, counts.computed, counts.reused)


def training_pass(run: Training, description: str) -> Iterator[Callable[[], torch.Tensor]]:
    """One pass of the task's loss over every training example, a batch per call, as the cache
    records it. It draws no random numbers, but a resumed run must not depend on that."""
    rng_states = rng_snapshot()
    try:
        for indices in tqdm(batches(list(range(len(run.train))), run.config.batch_size), desc=description,
                            leave=False, disable=None):
            yield partial(batch_loss, run, [run.train[i] for i in indices])
    finally:
        restore_rng(*rng_states)


def batch_loss(run: Training, examples: list) -> torch.Tensor:
    """The task's loss on `examples`: collated on the CPU, moved to the device here (the one place
    training batches move), computed under the run's autocast."""
    batch = run.runtime.move(run.task.collate(examples))
    with run.runtime.autocast():
        return run.task.loss(run.model, batch)


def train_step(run: Training, indices: list[int]) -> float:
    """Forward, backward and update on one batch; returns its loss.

    With several processes each takes its share of the batch, weighted by its size, and the
    gradients and losses are summed over processes: the arithmetic of one process on the whole
    batch for losses that average over examples (in-batch negatives come from the share).
    """
    processes = run.processes
    share = indices[processes.process_index :: processes.num_processes]
    loss = torch.zeros((), device=run.runtime.device)
    if share:
        with run.cache.replaying() if run.cache is not None else nullcontext():
            loss = batch_loss(run, [run.train[i] for i in share]) * (len(share) / len(indices))
            run.scaler.scale(loss).backward()
    loss = loss.detach()
    if processes.num_processes > 1:
        loss = sum_over_processes([p for p in run.trainable if p.requires_grad], loss)  # not what progressive froze
    run.scaler.unscale_(run.optimizer)  # clip the true gradients (a no-op without fp16)
    if run.current_norms is not None:  # found once: not a search of the model at every step
        run.current_norms = [total + norm for total, norm in zip(run.current_norms, block_gradient_norms(run.blocks))]
    torch.nn.utils.clip_grad_norm_(run.trainable, MAX_GRAD_NORM)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
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


def processes_agree_on(flag: bool, run: Training) -> bool:
    """True in every process when it is true in any (each process reads its own clock)."""
    if run.processes.num_processes == 1:
        return flag
    vote = torch.tensor([float(flag)], device=run.runtime.device)
    torch.distributed.all_reduce(vote, op=torch.distributed.ReduceOp.MAX)
    return bool(vote.item())


def validate_and_keep_best(run: Training, state: TrainingState) -> None:
    """At an evaluation point: score valid, record it, keep the best weights."""
    if run.processes.is_main_process:
        scores = evaluate(run, run.valid, f"valid at step {state.global_step}")
        train_loss = float(np.mean(state.losses_since_evaluation))
        state.history.append({"epoch": state.epoch, "step": state.global_step, "train_seconds": state.train_seconds,
                              "train_loss": train_loss, "valid": scores})
        log.info("epoch %d, step %d, %.1f s of training: train loss %.4f, valid %s", state.epoch, state.global_step,
                 state.train_seconds, train_loss, format_metrics(scores))
        if state.best_score is None or scores[run.task.selection_metric] > state.best_score:
            state.best_score, state.best_epoch, state.best_valid = scores[run.task.selection_metric], state.epoch, scores
            state.evaluations_since_best = 0
            save_model_atomically(run.model, run.out / BEST_CHECKPOINT)
        else:
            state.evaluations_since_best += 1
    patience = run.config.patience
    state.stopped_early = processes_agree_on(  # the main process decides; the others follow
        run.processes.is_main_process and 0 < patience <= state.evaluations_since_best, run)
    if state.stopped_early:
        log.info("stopping early: no better valid %s in %d evaluations", run.task.selection_metric, patience)
    state.losses_since_evaluation = []
    state.evaluations_done += 1
    run.processes.wait_for_everyone()


def save_checkpoint_on_main(run: Training, state: TrainingState) -> None:
    if run.processes.is_main_process:
        state = dataclasses.replace(state, current_norms=run.current_norms)
        save_checkpoint(run.out, run.model, run.optimizer, run.scheduler, state, run.scaler)


def freeze_blocks_that_stopped_changing(run: Training, state: TrainingState) -> None:
    """End of a --freeze progressive interval: freeze the bottom blocks whose gradient norm changed
    least. Every process decides alike: the gradients are summed over processes before."""
    previous, state.interval_norms = state.interval_norms, run.current_norms
    run.current_norms = [0.0] * run.num_layers
    if previous is None:
        return
    k = blocks_to_freeze(state.frozen_k, previous, state.interval_norms, run.config.progressive.percentile)
    if k != state.frozen_k:
        freeze(run.model, k, freeze_decoder=run.config.freeze_decoder)
        state.frozen_k = k
        state.freezing.append({"k": k, "step": state.global_step, "train_seconds": run.clock.seconds})
        log.info("step %d: embeddings and the bottom %d blocks frozen (their gradients changed least)",
                 state.global_step, k)
        cache_newly_frozen_blocks(run, k)


def test_and_write(run: Training, state: TrainingState, freeze_auto: dict | None) -> RunMetrics:
    """Score test with the best checkpoint, write metrics.json, and remove what only resuming needed."""
    load_model(run.model, str(run.out / BEST_CHECKPOINT))
    test_scores = evaluate(run, run.test, "test", state.best_valid)
    log.info("test (best %s): %s", run.policy.best_point(state), format_metrics(test_scores))
    config = run.config
    metrics = RunMetrics(
        task=config.task, model=config.model, method=config.method,
        freeze=config.freeze if state.frozen_k is None else state.frozen_k,
        progressive=state.freezing if config.freeze == PROGRESSIVE else None,  # [] when it never froze
        selection_metric=run.task.selection_metric, test=test_scores,
        params=param_report(run.model, run.model.components()).to_dict(),  # as trained at the end: a progressive run's final K
        zero_shot_test=state.zero_shot, seed=config.seed, freeze_auto=freeze_auto, num_layers=run.num_layers,
        best_epoch=state.best_epoch,
        seconds_per_epoch=float(np.mean(state.epoch_durations)) if state.epoch_durations else None,
        epoch_seconds=state.epoch_durations, time_budget=config.time_budget.seconds, train_seconds=state.train_seconds,
        steps=state.global_step, epochs_trained=state.global_step / run.steps_per_epoch,
        processes=run.processes.num_processes,
        examples={"train": len(run.train), "valid": len(run.valid), "test": len(run.test)},
        history=state.history, stopped_early=state.stopped_early, activation_cache=run.cache is not None, pooling=run.task.pooling(run.model),
        **run.runtime.to_dict(),
        peak_rss_mb=peak_rss_mb(), peak_device_memory_mb=run.runtime.peak_memory_mb(),
    )
    write_json(run.out / METRICS_FILE, metrics.to_dict())
    remove_checkpoints(run.out)  # the run is complete; metrics.json and best/ are what remains
    shutil.rmtree(run.out / SPILL_FOLDER, ignore_errors=True)
    remove_unfinished_writes(run.out)
    return metrics


class StopPolicy:
    """When a run validates, when it stops, and how its points are named."""

    validates_mid_epoch: bool

    def finished(self, state: TrainingState) -> bool:
        raise NotImplementedError

    def evaluation_due(self, state: TrainingState, seconds: float) -> bool:
        """Whether to stop the epoch here and validate (asked after each step when `validates_mid_epoch`)."""
        raise NotImplementedError

    def schedule(self, optimizer, warmup_fraction: float, clock: TrainingClock):
        """The learning-rate schedule: linear warm-up, then linear decay to 0 over the run."""
        raise NotImplementedError

    def label(self, state: TrainingState) -> str:
        raise NotImplementedError

    def best_point(self, state: TrainingState) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Epochs(StopPolicy):
    """Train whole epochs and validate at the end of each."""

    epochs: int
    steps_per_epoch: int
    validates_mid_epoch = False

    def finished(self, state):
        return state.epoch > self.epochs

    def evaluation_due(self, state, seconds):
        return False

    def schedule(self, optimizer, warmup_fraction, clock):
        total_steps = self.epochs * self.steps_per_epoch
        return get_linear_schedule_with_warmup(optimizer, int(warmup_fraction * total_steps), total_steps)

    def label(self, state):
        return f"epoch {state.epoch}/{self.epochs}"

    def best_point(self, state):
        return f"epoch {state.best_epoch}"


@dataclass(frozen=True)
class TimeBudget(StopPolicy):
    """Train for `seconds` of training time and validate at `marks` equal fractions of it; the
    learning rate follows the training clock, not the steps. A step that passes several marks
    validates once, so the run ends when its time is spent, whatever the number of marks."""

    seconds: float
    marks: int
    validates_mid_epoch = True

    def finished(self, state):
        return state.evaluations_done >= self.marks or state.train_seconds >= self.seconds

    def evaluation_due(self, state, seconds):
        return seconds >= self.seconds * (state.evaluations_done + 1) / self.marks

    def schedule(self, optimizer, warmup_fraction, clock):
        def factor(_step: int) -> float:
            progress = min(clock.seconds / self.seconds, 1.0)
            if progress < warmup_fraction:
                return progress / warmup_fraction
            return (1 - progress) / (1 - warmup_fraction)

        return LambdaLR(optimizer, factor)

    def label(self, state):
        return f"epoch {state.epoch} (budget {self.seconds:g} s)"

    def best_point(self, state):
        return "evaluation"


def stop_policy(config: FinetuneConfig, steps_per_epoch: int) -> StopPolicy:
    if config.time_budget.enabled:
        return TimeBudget(config.time_budget.seconds, config.time_budget.marks)
    return Epochs(config.epochs, steps_per_epoch)


class TrainingClock:
    """Seconds spent training (cache filling included; evaluation and end-of-epoch checkpoints not).

    `source` is where the time comes from: tests replace it with a clock that does not depend on
    the machine's speed.
    """

    source = staticmethod(time.perf_counter)

    def __init__(self) -> None:
        self.seconds_before, self._since = 0.0, None

    def start(self) -> None:
        self._since = self.source()

    def since_start(self) -> float:
        return self.source() - self._since

    def stop(self) -> float:
        """Stop; returns the seconds since `start`."""
        lap = self.since_start()
        self.seconds_before, self._since = self.seconds_before + lap, None
        return lap

    @property
    def seconds(self) -> float:
        return self.seconds_before + (self.since_start() if self._since is not None else 0.0)


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """The training examples' order in `epoch`: a function of seed and epoch alone, so a resumed run
    can continue mid-epoch."""
    epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed)).tolist()


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[start : start + size] for start in range(0, len(order), size)]


def save_model_atomically(model: torch.nn.Module, path: Path) -> None:
    with atomic_path(path) as temporary:
        save_model(model, str(temporary))


def prefix_cache(model: TaskModel, config: FinetuneConfig, processes, k: int) -> FrozenPrefixCache | None:
    """The activation cache of the bottom `k` blocks when it applies: something frozen (every task
    and family supports it).

    Each process of a multi-process run caches every training sequence (its share of the batches
    changes every epoch) and spills into its own folder.
    """
    if k == FULL_FINETUNING or not config.cache.enabled:
        return None
    spill_folder = Path(config.out) / SPILL_FOLDER
    if processes.num_processes > 1:
        spill_folder /= f"process-{processes.process_index}"
    return FrozenPrefixCache(model, k, spill_folder=spill_folder,
                             memory_limit=config.cache.memory_mb * 2**20, device_limit=config.cache.device_mb * 2**20)


@torch.no_grad()
def evaluate(run: Training, examples, description: str, valid_metrics: dict | None = None) -> dict:
    """The task's metrics of the model on `examples`, in eval mode. With the activation cache (and a
    task whose evaluation reads whole inputs), the frozen prefix runs on an input at its first
    evaluation only: later evaluations replay the states stored then."""
    run.model.eval()
    served = run.cache is not None and run.task.evaluates_from_prefix_cache
    with run.cache.evaluating() if served else nullcontext():
        return run.task.evaluate(run.model, examples, description, valid_metrics)


def evaluate_test(run: Training, description: str) -> dict[str, float]:
    """Test metrics; a task that tunes something on valid (a threshold) gets valid scored first."""
    valid_metrics = evaluate(run, run.valid, f"{description} valid") if run.task.tunes_on_valid else None
    return evaluate(run, run.test, f"{description} test", valid_metrics)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
