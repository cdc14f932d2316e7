"""The one training loop. Every task runs through `finetune`; tasks only supply data, model and loss.

Read top to bottom: check inputs → load data and model → freeze → zero-shot test → for each epoch
(train, validate, keep the best checkpoint) → test the best checkpoint → write the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import resource
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from telly.config import AUTO, FinetuneConfig
from telly.errors import UserError
from telly.files import write_json
from telly.models.cache import FrozenPrefixCache, cache_supported
from telly.models.freeze import freeze, param_report
from telly.models.layers import find_backbone
from telly.models.lora import apply_lora
from telly.models.load import resolve_model_name
from telly.tasks import get_task

BEST_CHECKPOINT = Path("best") / "model.safetensors"
AUTO_FREEZE_FOLDER = "auto-freeze"  # the brief run that chose K for --freeze auto
MAX_GRAD_NORM = 1.0

log = logging.getLogger("telly")


def finetune(config: FinetuneConfig) -> dict:
    """Fine-tune `config.model` on `config.task`; write `config.out`; return the metrics dict."""
    out = Path(config.out)
    existed, was_empty = out.exists(), not out.is_dir() or not any(out.iterdir())
    prepare_run_folder(out, overwrite=config.overwrite)
    try:
        with run_log(out / "log.txt"):
            return _finetune(config, out)
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


def _finetune(config: FinetuneConfig, out: Path) -> dict:
    task_class = get_task(config.task)
    write_json(out / "config.json", {**dataclasses.asdict(config), "model_path": resolve_model_name(config.model)})
    auto_freeze = None
    if config.freeze == AUTO:
        from telly.study.recommend import recommend_k

        auto_freeze = recommend_k(config, out / AUTO_FREEZE_FOLDER)
        log.info("--freeze auto: K=%d (%s; %.1f s)", auto_freeze.k, auto_freeze.reason, auto_freeze.seconds)
        config = dataclasses.replace(config, freeze=auto_freeze.k)
    seed_everything(config.seed)

    task = task_class(config)
    train, valid, test = (task.read_split(Path(config.data), split) for split in ("train", "valid", "test"))
    train = random.Random(config.seed).sample(train, len(train))[: config.max_train_examples]
    valid, test = valid[: config.max_eval_examples], test[: config.max_eval_examples]
    log.info("data: %d train / %d valid / %d test examples from %s", len(train), len(valid), len(test), config.data)

    pretrained = task.load_pretrained()
    model = task.build_model(pretrained)
    num_layers = find_backbone(model).num_layers
    if config.method == "lora":
        targets = tuple(name for name in config.lora_targets.split(",") if name)
        apply_lora(model, pretrained, config.lora_rank, config.lora_alpha, targets)
    else:
        freeze(model, config.freeze, freeze_decoder=config.freeze_decoder)
    params = param_report(model, model.components())
    variant = f"LoRA r={config.lora_rank}" if config.method == "lora" else f"K={config.freeze}"
    log.info("model: %s, %d layers, %s; %s", config.model, num_layers, variant, params)

    loader = DataLoader(
        train,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=task.collate,
        generator=torch.Generator().manual_seed(config.seed),
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)

    cache = prefix_cache(task, model, config)
    fill_loader = DataLoader(train, batch_size=config.batch_size, collate_fn=task.collate)

    zero_shot = None if model.has_new_parts else evaluate_test(task, model, valid, test, "zero-shot")
    log.info("zero-shot test: %s", format_metrics(zero_shot) if zero_shot else "skipped (newly initialised parts)")

    history, best_score, best_epoch, best_valid = [], -float("inf"), 0, None
    for epoch in range(1, config.epochs + 1):
        model.train()
        started, losses = time.perf_counter(), []
        if cache is not None and epoch == 1:  # counted in the first epoch's time
            batches = tqdm(fill_loader, desc="caching frozen layers", leave=False, disable=None)
            cache.fill(model, lambda: [task.loss(model, batch) for batch in batches])
            log.info("activation cache: %d sequences after %.1f s", len(cache), time.perf_counter() - started)
        with cache.replaying() if cache is not None else nullcontext():
            for batch in tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=None):
                loss = task.loss(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
        seconds = time.perf_counter() - started

        scores = evaluate(task, model, valid, f"valid {epoch}")
        history.append({"epoch": epoch, "seconds": seconds, "train_loss": float(np.mean(losses)), "valid": scores})
        log.info("epoch %d: %.1f s, train loss %.4f, valid %s", epoch, seconds, np.mean(losses), format_metrics(scores))
        if scores[task.selection_metric] > best_score:
            best_score, best_epoch, best_valid = scores[task.selection_metric], epoch, scores
            save_model(model, str(out / BEST_CHECKPOINT))

    load_model(model, str(out / BEST_CHECKPOINT))
    test_scores = evaluate(task, model, test, "test", best_valid)
    log.info("test (best epoch %d): %s", best_epoch, format_metrics(test_scores))

    epoch_seconds = [entry["seconds"] for entry in history]
    metrics = {
        "task": config.task,
        "model": config.model,
        "method": config.method,
        "freeze": config.freeze,
        "freeze_auto": auto_freeze.to_dict() if auto_freeze else None,
        "num_layers": num_layers,
        "test": test_scores,
        "zero_shot_test": zero_shot,
        "best_epoch": best_epoch,
        "selection_metric": task.selection_metric,
        "params": params.to_dict(),
        "seconds_per_epoch": float(np.mean(epoch_seconds)),
        "epoch_seconds": epoch_seconds,
        "steps": total_steps,
        "examples": {"train": len(train), "valid": len(valid), "test": len(test)},
        "history": history,
        "activation_cache": cache is not None,
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def prefix_cache(task, model, config: FinetuneConfig) -> FrozenPrefixCache | None:
    """The activation cache when it applies: something frozen, the task and the model support it."""
    if config.freeze < 0 or config.no_cache:
        return None
    if not (task.caches_prefix and cache_supported(model)):
        log.info("activation cache: not available for this task and model; frozen layers run every step")
        return None
    return FrozenPrefixCache(model, config.freeze, task.tokenizer.pad_token_id)


@torch.no_grad()
def evaluate(task, model, examples, description: str, valid_metrics: dict | None = None) -> dict[str, float]:
    model.eval()
    return task.evaluate(model, examples, description, valid_metrics)


def evaluate_test(task, model, valid, test, description: str) -> dict[str, float]:
    """Test metrics; a task that tunes something on valid (a threshold) gets valid scored first."""
    valid_metrics = evaluate(task, model, valid, f"{description} valid") if task.tunes_on_valid else None
    return evaluate(task, model, test, f"{description} test", valid_metrics)


def prepare_run_folder(out: Path, *, overwrite: bool) -> None:
    """Refuse to mix a new run with an old one's results unless asked to overwrite them."""
    if out.exists() and not out.is_dir():
        raise UserError(f"run folder {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"run folder {out} is not empty; pass --overwrite or choose another --out")
    try:
        (out / BEST_CHECKPOINT.parent).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create run folder {out}: {error.strerror}") from None


@contextmanager
def run_log(path: Path):
    """Send the `telly` logger to the run's log file and the console while the run lasts."""
    file_handler = logging.FileHandler(path, mode="w", encoding="utf-8")
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
