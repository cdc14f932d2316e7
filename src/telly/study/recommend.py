"""`telly recommend` and `telly finetune --freeze auto`: choose K from how fine-tuning moves the layers.

Fine-tune briefly (full fine-tuning, one epoch on the first `auto_freeze_examples` training
examples, the run's other settings unchanged), measure each layer's similarity to the pre-trained
model on validation inputs, and freeze every layer that stayed similar: K is the largest k such
that layers 0..k (0 = embedding output, k = output of block k) all reach the threshold. Shi et al.
found the lower layers barely move and the top ones move most; this asks the model at hand.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from telly.config import FULL_FINETUNING, FinetuneConfig, TimeBudgetOptions
from telly.models.load import resolve_model_name
from telly.run_folder import opened_run
from telly.runtime import Runtime, start_processes
from telly.study.compare import compare_run
from telly.train import train

BRIEF_RUN = "brief-run"
BRIEF_EVAL_EXAMPLES = 32  # the brief run is not scored for its quality; keep its evaluation short


@dataclass
class Recommendation:
    k: int
    measure: str
    threshold: float
    similarities: list[float]  # per layer 0..L
    train_examples: int
    inputs: int
    seconds: float

    @property
    def reason(self) -> str:
        layers = len(self.similarities) - 1
        if self.k == FULL_FINETUNING:
            return f"the embedding output's {self.measure.upper()} {self.similarities[0]:.4f} is below {self.threshold}"
        if self.k == layers - 1:
            return f"layers 0..{self.k} all reach {self.threshold} (the top block always trains)"
        return (
            f"layers 0..{self.k} reach {self.measure.upper()} >= {self.threshold}; "
            f"layer {self.k + 1} has {self.similarities[self.k + 1]:.4f}"
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "reason": self.reason}

    @classmethod
    def from_dict(cls, saved: dict) -> "Recommendation":
        return cls(**{field.name: saved[field.name] for field in dataclasses.fields(cls)})


def choose_k(similarities: list[float], threshold: float) -> int:
    """The largest K in -1..L-1 whose layers 0..K all have similarity >= threshold."""
    k = FULL_FINETUNING
    for layer, similarity in enumerate(similarities[:-1]):  # layer L (the top block's output) always trains
        if similarity < threshold:
            break
        k = layer
    return k


def recommend_k(config: FinetuneConfig, out: Path, runtime: Runtime) -> Recommendation:
    """Fine-tune `config` briefly into `out/brief-run` on `runtime`, compare layers, recommend K."""
    started = time.perf_counter()
    brief_run = Path(out) / BRIEF_RUN
    brief = dataclasses.replace(
        config,
        out=str(brief_run),
        freeze=FULL_FINETUNING,
        epochs=1,
        time_budget=TimeBudgetOptions(),
        max_train_examples=config.auto_freeze.examples,
        max_eval_examples=min(config.max_eval_examples or BRIEF_EVAL_EXAMPLES, BRIEF_EVAL_EXAMPLES),
        resume=False,
        overwrite=True,
    )
    processes = start_processes(brief.device)
    with opened_run(brief_run, brief, processes, resolve_model_name(brief.model)):
        metrics = train(brief, brief_run, processes, runtime)
    # The task's own validation inputs; point estimates only: the choice compares them to a threshold.
    report = compare_run(brief_run, inputs=config.auto_freeze.inputs, split="valid", data=Path(config.data),
                         runtime=runtime, resamples=0)
    options = config.auto_freeze
    similarities = [row[options.measure] for row in report["layers"]]
    return Recommendation(
        k=choose_k(similarities, options.threshold),
        measure=options.measure,
        threshold=options.threshold,
        similarities=similarities,
        train_examples=metrics.examples["train"],
        inputs=report["inputs"],
        seconds=round(time.perf_counter() - started, 1),
    )


def recommendation_markdown(recommendation: Recommendation, task: str, model: str) -> str:
    lines = [
        f"# Recommended K for {task} on {model}: K={recommendation.k}",
        "",
        f"After fine-tuning on {recommendation.train_examples} examples, {recommendation.measure.upper()} "
        f"of each layer to the pre-trained model on {recommendation.inputs} validation inputs; "
        f"threshold {recommendation.threshold}. {recommendation.reason[0].upper()}{recommendation.reason[1:]}.",
        "",
        f"| layer | {recommendation.measure.upper()} | frozen with K={recommendation.k} |",
        "|---|---|---|",
        *(
            f"| {layer} | {value:.4f} | {'yes' if layer <= recommendation.k else 'no'} |"
            for layer, value in enumerate(recommendation.similarities)
        ),
    ]
    return "\n".join(lines) + "\n"

