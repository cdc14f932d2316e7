"""`telly sweep`: full fine-tuning, Telly-K for several K and LoRA, with the same seeds, data and budget.

Each variant is an ordinary run folder `OUT/<variant>/` (`OUT/<variant>-seed<S>/` for each of
several `--seeds`) written by `telly.pipeline.finetune`, in a process of its own (so its peak
memory is its own) that ends when the sweep's process ends, even killed alone. A sweep started
again skips the variants that finished (they have metrics.json) and resumes the others from their
last checkpoint. Executors:
- "local": one variant after another on this machine;
- "ray": the variants as Ray tasks (Ray must be installed: `pip install 'telly[ray]'`).
The report (`telly.report.write_report`) is rebuilt from the run folders at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from telly.config import FULL_FINETUNING, PROGRESSIVE, FinetuneConfig
from telly.errors import UserError, at_the_boundary, one_line
from telly.run_folder import is_finished, run_log

EXECUTORS = ("local", "ray")

log = logging.getLogger("telly")


@dataclass(frozen=True)
class Variant:
    name: str  # the run folder's name: "full", "k3", "progressive", "lora" ("-seed<S>" added with several seeds)
    method: str
    freeze: int | str  # K, or "progressive"
    seed: int | None = None  # None: the sweep's --seed


def sweep_variants(num_layers: int, ks: str, lora: bool, seeds: str | None = None,
                   progressive: bool = False) -> list[Variant]:
    """Full fine-tuning first, then Telly-K for `ks` ("all" = 0..L-1, "none", or "0,3,5"), then progressive
    freezing and LoRA if asked; each once per seed of `seeds` ("1,2,3"; None: once, with the sweep's --seed).
    Seed by seed: all the variants of one seed run before the next seed's, so that a change in the
    machine's speed (a shared machine's slow hour) falls on every variant of a seed, which the
    comparisons paired by seed cancel, rather than on every seed of one variant."""
    if ks == "all":
        chosen = list(range(num_layers))
    elif ks == "none":
        chosen = []
    else:
        chosen = sorted(set(_integers("--ks", ks, "'all', 'none' or ")))
    for k in chosen:
        if not 0 <= k <= num_layers - 1:
            raise UserError(f"--ks: K={k} is out of range for a model with {num_layers} layers (0..{num_layers - 1})")
    variants = [Variant("full", "telly", FULL_FINETUNING)] + [Variant(f"k{k}", "telly", k) for k in chosen]
    variants += [Variant("progressive", "telly", PROGRESSIVE)] if progressive else []
    variants += [Variant("lora", "lora", FULL_FINETUNING)] if lora else []
    if seeds is None:
        return variants
    each_seed = list(dict.fromkeys(_integers("--seeds", seeds)))
    if len(each_seed) == 1:
        return [dataclasses.replace(variant, seed=each_seed[0]) for variant in variants]
    return [dataclasses.replace(variant, name=f"{variant.name}-seed{seed}", seed=seed)
            for seed in each_seed for variant in variants]


def _integers(option: str, text: str, alternatives: str = "") -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise UserError(f"{option} must be {alternatives}comma-separated integers, got {text!r}")
    return values


def has_progress(out: Path) -> bool:
    """Whether a sweep folder holds a variant that finished or can resume (what a failed sweep keeps)."""
    from telly.checkpoints import has_checkpoint  # torch: only once a sweep runs

    return any(is_finished(variant) or has_checkpoint(variant) for variant in Path(out).iterdir() if variant.is_dir())


def variant_config(base: FinetuneConfig, out: Path, variant: Variant) -> FinetuneConfig:
    return dataclasses.replace(
        base, out=str(out / variant.name), method=variant.method, freeze=variant.freeze, resume=True, overwrite=False,
        seed=base.seed if variant.seed is None else variant.seed,
    )


def run_sweep(base: FinetuneConfig, out: Path, variants: list[Variant], executor: str = "local") -> list[Path]:
    """Run every unfinished variant; return the run folders in variant order. Progress goes to the
    console and to OUT/sweep-log.txt."""
    if executor not in EXECUTORS:
        raise UserError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    out.mkdir(parents=True, exist_ok=True)
    with run_log(out / "sweep-log.txt", append=True):
        return _run_variants(base, out, variants, executor)


def _run_variants(base: FinetuneConfig, out: Path, variants: list[Variant], executor: str) -> list[Path]:
    pending = []
    for variant in variants:
        finished = is_finished(out / variant.name)
        log.info("sweep variant %s: %s", variant.name, "finished earlier, skipped" if finished else "to run")
        if not finished:
            pending.append(variant_config(base, out, variant))
    if executor == "ray":
        _run_with_ray(pending)
    else:
        for config in pending:
            _run_in_own_process(config)
    return [out / variant.name for variant in variants]


def _run_in_own_process(config: FinetuneConfig) -> None:
    process = multiprocessing.get_context("spawn").Process(target=_variant_process, args=(config,))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise UserError(f"variant {Path(config.out).name} failed (exit code {process.exitcode}); see {config.out}/log.txt")


def _variant_process(config: FinetuneConfig) -> None:
    """A variant's own process: `_finetune_entry`, ended by the end of the sweep's process too."""
    threading.Thread(target=_end_when_the_sweep_ends, daemon=True).start()
    _finetune_entry(config)


def _end_when_the_sweep_ends() -> None:
    """Ctrl-C reaches a variant along with its sweep, but a sweep killed alone (SIGTERM, SIGKILL)
    would leave its variant running and writing into the sweep's folder. Killed instead (Ctrl-C may
    be ignored: a sweep started in the background), it resumes from its last checkpoint, as any run does."""
    multiprocessing.parent_process().join()
    os.kill(os.getpid(), signal.SIGKILL)


def _finetune_entry(config: FinetuneConfig) -> None:
    """A variant's run: errors end it as they end the CLI (one line, exit code 2)."""
    from telly.pipeline import finetune

    sys.exit(at_the_boundary(lambda: finetune(config)))


def _run_with_ray(configs: list[FinetuneConfig]) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'telly[ray]'") from None
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    remote = ray.remote(**_ray_resources(ray.nodes(), configs[0].device if configs else "auto"))(_finetune_for_ray)
    failures = [message for message in ray.get([remote.remote(config) for config in configs]) if message]
    if failures:
        raise UserError("; ".join(failures))


def _ray_resources(nodes: list[dict], device: str) -> dict:
    """What one variant asks Ray for. With GPUs (and a device other than the CPU): one GPU and its
    share of a node's CPUs, so the variants run side by side, one on each GPU. Without: a whole
    node, so that concurrent variants never share CPUs and distort each other's timings."""
    alive = [node["Resources"] for node in nodes if node["Alive"]]
    node_cpus = min(resources.get("CPU", 1) for resources in alive)
    node_gpus = min(resources.get("GPU", 0) for resources in alive)
    if node_gpus >= 1 and device != "cpu":
        return {"num_gpus": 1, "num_cpus": max(1, int(node_cpus // node_gpus))}
    return {"num_cpus": node_cpus}


def _finetune_for_ray(config: FinetuneConfig) -> str | None:
    """A Ray task: the variant's error as text (None when it finished), so one failure does not hide the rest."""
    from telly.pipeline import finetune

    try:
        finetune(config)
    except (UserError, OSError) as error:  # what the CLI's boundary reports as one line
        return f"variant {Path(config.out).name}: {one_line(error)}"
    return None
