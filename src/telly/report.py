"""Side-by-side tables of finished runs (quality, parameters, time), read from their metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from telly.errors import UserError


def load_run(folder: Path) -> dict:
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise UserError(f"{folder} is not a finished run (no metrics.json)")
    try:
        return {"name": Path(folder).name, **json.loads(path.read_text(encoding="utf-8"))}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None


def comparison_table(runs: list[dict]) -> str:
    """A Markdown table, one row per run; speedup is relative to the full fine-tuning run (K=-1)."""
    if not runs:
        raise UserError("no runs to compare")
    tasks = {run["task"] for run in runs}
    if len(tasks) > 1:
        raise UserError(f"runs of different tasks cannot share a table: {', '.join(sorted(tasks))}")
    metric_names = list(runs[0]["test"])
    selection = runs[0]["selection_metric"]
    full = next((run for run in runs if variant(run) == "full"), None)

    header = ["run", "variant", f"zero-shot {selection}", *metric_names, "trainable / total params", "s/epoch", "speedup vs full"]
    rows = [header, ["---"] * len(header)]
    for run in runs:
        params = run["params"]
        speedup = f"{full['seconds_per_epoch'] / run['seconds_per_epoch']:.2f}x" if full else "n/a"
        rows.append([
            run["name"],
            variant(run),
            f"{run['zero_shot_test'][selection]:.4f}" if run["zero_shot_test"] else "n/a",
            *(f"{run['test'][name]:.4f}" for name in metric_names),
            f"{params['trainable'] / 1e6:.2f}M / {params['total'] / 1e6:.2f}M ({params['percent_trainable']:.1f}%)",
            f"{run['seconds_per_epoch']:.1f}",
            speedup,
        ])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def variant(run: dict) -> str:
    """"full", "K=3" or "LoRA" — what was trained."""
    if run.get("method") == "lora":
        return "LoRA"
    return "full" if run["freeze"] == -1 else f"K={run['freeze']}"
