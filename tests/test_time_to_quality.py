"""Time to quality (bench/time_to_quality.py's analysis): seconds to come within a point of full
fine-tuning's best validation score, scores at fractions of full's time, intervals over seeds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from telly.run_folder import RunMetrics
from telly.time_to_quality import Curve, markdown, summarize


def run(points, test, train_seconds=None):
    """A finished run's metrics with validations at (seconds, valid mrr)."""
    return RunMetrics(task="code-search", model="m", method="telly", freeze=-1, selection_metric="mrr",
                      test={"mrr": test}, params={}, train_seconds=train_seconds or points[-1][0],
                      history=[{"train_seconds": at, "valid": {"mrr": score}} for at, score in points])


def test_a_curve_is_the_best_score_so_far_and_the_first_time_it_reaches_a_target():
    curve = Curve([10.0, 20.0, 30.0], [0.5, 0.7, 0.6])
    assert [curve.best_at(at) for at in (5.0, 10.0, 25.0, 99.0)] == [None, 0.5, 0.7, 0.7]
    assert (curve.seconds_to_reach(0.6), curve.seconds_to_reach(0.7), curve.seconds_to_reach(0.71)) == (20.0, 20.0, None)


def test_each_variant_against_full_fine_tuning_seed_by_seed():
    runs = {
        "full": {1: run([(100, 0.60), (200, 0.70), (300, 0.69)], 0.68), 2: run([(100, 0.50), (200, 0.80)], 0.75)},
        "k3": {1: run([(40, 0.65), (80, 0.695), (120, 0.70)], 0.66), 2: run([(50, 0.70), (100, 0.795)], 0.70)},
        "k5": {1: run([(30, 0.60)], 0.60), 2: run([(30, 0.79)], 0.70)},
    }
    summary = summarize(runs, within=0.01)
    # Targets: seed 1 0.70 - 0.01 = 0.69, seed 2 0.80 - 0.01 = 0.79; full's time 300 s and 200 s.
    assert summary["full"]["seconds_to_target"]["per_seed"] == [200, 200]
    k3 = summary["k3"]
    assert k3["seconds_to_target"]["per_seed"] == [80, 100]
    assert k3["fraction_of_full_time"]["per_seed"] == pytest.approx([80 / 300, 100 / 200])
    mean, half = (80 / 300 + 0.5) / 2, stats.t.ppf(0.975, 1) * stats.tstd([80 / 300, 0.5]) / 2 ** 0.5
    assert k3["fraction_of_full_time"]["mean"] == pytest.approx(mean)
    assert k3["fraction_of_full_time"]["interval"] == pytest.approx((mean - half, mean + half))
    # at 25% of full's time: seed 1 75 s (best of the validation at 40 s), seed 2 50 s
    assert k3["valid_at_0.25_of_full"]["per_seed"] == [0.65, 0.70]
    assert k3["test"]["per_seed"] == [0.66, 0.70]
    # k5 never reaches seed 1's target: no mean, the seed counted as missing
    assert summary["k5"]["seconds_to_target"] == {"per_seed": [None, 30], "mean": None, "interval": None, "missing": 1}
    assert "not reached in 1 of 2 seeds" in markdown(summary, "mrr", 0.01)


def test_the_bench_runs_a_sweep_over_seeds_and_writes_its_analysis(tiny_bert_dir, email_corpus, tmp_path):
    out = tmp_path / "ttq"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parent.parent / "bench" / "time_to_quality.py"),
         "--model", str(tiny_bert_dir), "--data", str(email_corpus), "--out", str(out), "--ks", "1", "--seeds", "1,2",
         "--patience", "1", "--", "--epochs", "3", "--batch-size", "8", "--max-train-examples", "16",
         "--max-eval-examples", "8", "--max-code-len", "32", "--max-nl-len", "16", "--lr", "1e-3"],
        capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "time_to_quality.json").read_text())
    assert set(result["variants"]) == {"full", "k1"}
    for variant in ("full", "k1"):
        tests = [json.loads((out / f"{variant}-seed{seed}" / "metrics.json").read_text())["test"]["mrr"] for seed in (1, 2)]
        assert result["variants"][variant]["test"]["per_seed"] == tests
    full_seconds = [json.loads((out / f"full-seed{seed}" / "metrics.json").read_text())["train_seconds"] for seed in (1, 2)]
    reached = result["variants"]["full"]["seconds_to_target"]["per_seed"]
    assert all(0 < at <= total for at, total in zip(reached, full_seconds))  # full reaches its own best
    assert (out / "time_to_quality.png").stat().st_size > 0 and "| k1 | 2 |" in (out / "time_to_quality.md").read_text()
