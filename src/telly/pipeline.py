"""`telly finetune` from start to end: processes and device, the run folder, `--freeze auto`, the loop.

Under `accelerate launch` every process trains its share of each batch; the main process alone
prepares and writes the run folder, evaluates and returns the metrics (the others return None).
`--freeze auto` is resolved here, before the loop starts (`telly.study.recommend` fine-tunes
briefly and measures which layers moved), so the loop only ever sees an integer K.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from telly.config import AUTO, FinetuneConfig
from telly.errors import UserError
from telly.files import read_json, write_json
from telly.models.load import resolve_model_name
from telly.run_folder import (
    AUTO_FREEZE_FOLDER, RECOMMENDATION_FILE, RunMetrics, check_same_settings, is_finished, opened_run, read_metrics,
)
from telly.runtime import Runtime, resolve_runtime, start_processes
from telly.study.recommend import Recommendation, recommend_k
from telly.train import train

log = logging.getLogger("telly")


def finetune(config: FinetuneConfig) -> RunMetrics | None:
    """Fine-tune `config.model` on `config.task` into `config.out`; its metrics (None in all but
    the main process of a multi-process launch)."""
    processes = start_processes(config.device)
    runtime = resolve_runtime(config.device, config.mixed_precision, processes)
    out = Path(config.out)
    # Every process sees the same answer: metrics.json is written only after training, which needs them all.
    if config.resume and is_finished(out):
        check_same_settings(out, config)
        return read_metrics(out) if processes.is_main_process else None
    with opened_run(out, config, processes, resolve_model_name(config.model)):
        config, freeze_auto = resolve_auto_freeze(config, out, processes, runtime)
        return train(config, out, processes, runtime, freeze_auto)


def resolve_auto_freeze(config: FinetuneConfig, out: Path, processes, runtime: Runtime) -> tuple[FinetuneConfig, dict | None]:
    """`config` with `--freeze auto` replaced by the K a brief run recommends (kept for --resume),
    and the recommendation; `config` unchanged and None for any other K."""
    if config.freeze != AUTO:
        return config, None
    if processes.num_processes > 1:
        raise UserError("--freeze auto runs in one process; choose K with 'telly recommend', then pass --freeze K")
    chosen = out / AUTO_FREEZE_FOLDER / RECOMMENDATION_FILE
    if config.resume and chosen.is_file():
        recommendation = Recommendation.from_dict(read_json(chosen))
    else:
        recommendation = recommend_k(config, out / AUTO_FREEZE_FOLDER, runtime)
        write_json(chosen, recommendation.to_dict())
    log.info("--freeze auto: K=%d (%s; %.1f s)", recommendation.k, recommendation.reason, recommendation.seconds)
    return dataclasses.replace(config, freeze=recommendation.k), recommendation.to_dict()
