"""Time to quality (bench/time_to_quality.py's analysis): seconds to come within a point of full
fine-tuning's best validation score, scores at fractions of full's time, intervals over seeds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from telly.run_folder import RunMetrics
from telly.time_to_quality import Curve, markdown, summarize


def run(points, test, train_seconds=None, steps=60):
    """A finished run's metrics with validations at (seconds, valid mrr)."""
    return RunMetrics(task="code-search", model="m", method="telly", freeze=-1, selection_metric="mrr",
                      test={"mrr": test}, params={}, train_seconds=train_seconds or points[-1][0], steps=steps,
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
    # full's own curve reached each target at 200 s: seed 1's last 100 s only confirmed its plateau
    assert k3["fraction_of_full_time_to_target"]["per_seed"] == pytest.approx([80 / 200, 100 / 200])
    assert summary["full"]["fraction_of_full_time_to_target"]["per_seed"] == [1, 1]
    # at 25% of full's time: seed 1 75 s (best of the validation at 40 s), seed 2 50 s
    assert k3["valid_at_0.25_of_full"]["per_seed"] == [0.65, 0.70]
    assert k3["test"]["per_seed"] == [0.66, 0.70]
    assert k3["test_delta_vs_full"]["per_seed"] == pytest.approx([0.66 - 0.68, 0.70 - 0.75])
    assert summary["full"]["test_delta_vs_full"]["per_seed"] == [0, 0]
    # k5 never reaches seed 1's target: no mean, the seed counted as missing
    assert summary["k5"]["seconds_to_target"] == {"per_seed": [None, 30], "mean": None, "interval": None, "missing": 1}
    table = markdown(summary, "mrr", 0.01)
    assert "not reached in 1 of 2 seeds" in table
    # full's row: its time to target is a measurement (0.67x and 1x of its times); against itself, no ratio
    # or Δ; at 25% of its time (75 s, 50 s) it had not validated yet
    full_row = next(line for line in table.splitlines() if line.startswith("| full |")).split(" | ")
    assert full_row[2:6] == ["200 [200, 200]", "0.8333 [-1.284, 2.951]", "–", "not validated by then in 2 of 2 seeds"]
    assert full_row[-3:-1] == ["0.715 [0.2703, 1.16]", "–"]


def test_the_targets_and_times_can_come_from_a_reference_run_that_is_not_compared():
    reference = {1: run([(100, 0.60), (300, 0.80)], 0.70), 2: run([(100, 0.70), (300, 0.90)], 0.80)}
    runs = {"full, 300 s": reference,
            "full, 150 s": {1: run([(50, 0.70), (150, 0.79)], 0.69), 2: run([(50, 0.80), (150, 0.85)], 0.78)},
            "k2, 150 s": {1: run([(50, 0.72), (150, 0.795)], 0.72, steps=90), 2: run([(75, 0.89)], 0.79, steps=30)}}
    summary = summarize(runs, within=0.01, reference="full, 300 s")
    # targets 0.79 and 0.89; full's time 300 s for both seeds
    assert summary["full, 150 s"]["seconds_to_target"]["per_seed"] == [150, None]
    assert summary["k2, 150 s"]["fraction_of_full_time"]["per_seed"] == pytest.approx([150 / 300, 75 / 300])
    # the reference reached its targets at 300 s, its last validations
    assert summary["full, 150 s"]["fraction_of_full_time_to_target"]["per_seed"] == [0.5, None]
    assert summary["k2, 150 s"]["valid_at_0.25_of_full"]["per_seed"] == [0.72, 0.89]  # at 75 s
    assert summary["k2, 150 s"]["test_delta_vs_full"]["per_seed"] == pytest.approx([0.02, -0.01])
    assert summary["full, 300 s"]["seconds_to_target"]["per_seed"] == [300, 300]
    assert summary["k2, 150 s"]["steps_per_second"]["per_seed"] == pytest.approx([90 / 150, 30 / 75])
    assert summary["full, 300 s"]["steps_per_second"]["mean"] == pytest.approx(60 / 300)


BENCH = Path(__file__).resolve().parent.parent / "bench" / "time_to_quality.py"


def bench(*options):
    return subprocess.run([sys.executable, str(BENCH), *options], capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def tiny_sweep(tiny_bert_dir, email_corpus, tmp_path_factory):
    """The bench's sweep of full fine-tuning and Telly-1 over seeds 1 and 2 on a tiny model, and its options."""
    out = tmp_path_factory.mktemp("ttq") / "sweep"
    options = ["--model", str(tiny_bert_dir), "--data", str(email_corpus), "--ks", "1", "--seeds", "1,2", "--patience",
               "1", "--", "--epochs", "3", "--batch-size", "8", "--max-train-examples", "16", "--max-eval-examples", "8",
               "--max-code-len", "32", "--max-nl-len", "16", "--lr", "1e-3"]
    done = bench("--out", str(out), *options)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, options


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


def copy_with_reference(sweep, tmp_path, change):
    """A copy of `sweep` (so that the shared sweep's analysis stays as it was) and a reference sweep
    holding its full fine-tuning runs' metrics, changed by `change(metrics)`."""
    out, reference = tmp_path / "sweep", tmp_path / "reference"
    shutil.copytree(sweep, out)
    for seed in (1, 2):
        metrics = metrics_of(out / f"full-seed{seed}")
        change(metrics)
        (reference / f"full-seed{seed}").mkdir(parents=True)
        (reference / f"full-seed{seed}" / "metrics.json").write_text(json.dumps(metrics))
    return out, reference


def trained_label(sweep, variant):
    return f"{sum(metrics_of(sweep / f'{variant}-seed{seed}')['train_seconds'] for seed in (1, 2)) / 2:.0f} s trained"


def test_the_bench_runs_a_sweep_over_seeds_and_writes_its_analysis(tiny_sweep):
    out, _ = tiny_sweep
    result = json.loads((out / "time_to_quality.json").read_text())
    assert set(result["variants"]) == {"full", "k1"}
    for variant in ("full", "k1"):
        tests = [metrics_of(out / f"{variant}-seed{seed}")["test"]["mrr"] for seed in (1, 2)]
        assert result["variants"][variant]["test"]["per_seed"] == tests
    full_seconds = [metrics_of(out / f"full-seed{seed}")["train_seconds"] for seed in (1, 2)]
    reached = result["variants"]["full"]["seconds_to_target"]["per_seed"]
    assert all(0 < at <= total for at, total in zip(reached, full_seconds))  # full reaches its own best
    assert (out / "time_to_quality.png").stat().st_size > 0 and "| k1 | 2 |" in (out / "time_to_quality.md").read_text()


def test_the_bench_measures_a_sweep_against_another_sweeps_full_fine_tuning(tiny_sweep, tmp_path):
    def better(metrics):  # a full fine-tuning that scored 0.1 higher on test and 0.5 higher at every validation
        metrics["test"]["mrr"] += 0.1
        for entry in metrics["history"]:
            entry["valid"]["mrr"] += 0.5
        metrics["train_seconds"] += 1000

    sweep, options = tiny_sweep
    out, reference = copy_with_reference(sweep, tmp_path, better)
    done = bench("--out", str(out), "--reference", str(reference), *options)  # the sweep's runs are reused
    assert done.returncode == 0, done.stderr[-3000:]
    variants = json.loads((out / "time_to_quality.json").read_text())["variants"]
    assert list(variants) == [f"full, {trained_label(reference, 'full')} (reference)",
                              f"full, {trained_label(out, 'full')}", f"k1, {trained_label(out, 'k1')}"]
    k1 = variants[f"k1, {trained_label(out, 'k1')}"]
    assert k1["seconds_to_target"] == {"per_seed": [None, None], "mean": None, "interval": None, "missing": 2}
    # a quarter of the reference's 1000 s and more is past k1's last validation
    assert k1["valid_at_0.25_of_full"]["per_seed"] == [
        max(entry["valid"]["mrr"] for entry in metrics_of(out / f"k1-seed{seed}")["history"]) for seed in (1, 2)]
    expected = [metrics_of(out / f"k1-seed{seed}")["test"]["mrr"] - metrics_of(reference / f"full-seed{seed}")["test"]["mrr"]
                for seed in (1, 2)]
    assert k1["test_delta_vs_full"]["per_seed"] == pytest.approx(expected)


def test_a_reference_without_the_seeds_or_of_other_data_is_refused_in_one_line(tiny_sweep, tmp_path):
    sweep, options = tiny_sweep
    out, reference = copy_with_reference(sweep, tmp_path, lambda metrics: metrics["examples"].update(valid=9))
    other_data = bench("--out", str(out), "--reference", str(reference), *options)
    error = other_data.stderr.splitlines()[-1]  # after the sweep's lines: its runs were reused
    assert other_data.returncode == 2 and error.startswith(f"time_to_quality: error: --reference {reference}: ")
    assert error.endswith("examples is {'train': 16, 'valid': 9, 'test': 8}, this sweep's {'train': 16, 'valid': 8, 'test': 8}")

    seeds = [*options[:options.index("--seeds") + 1], "1,2,3", *options[options.index("--seeds") + 2:]]
    no_seed_3 = bench("--out", str(out), "--reference", str(reference), *seeds)
    assert no_seed_3.returncode == 2 and no_seed_3.stderr.count("\n") == 1 and "for seeds [3]" in no_seed_3.stderr
    assert not (out / "full-seed3").exists()  # refused before training

    _, other_model = copy_with_reference(sweep, tmp_path / "other-model", lambda metrics: metrics.update(model="smollm2"))
    fresh = tmp_path / "fresh"
    refused = bench("--out", str(fresh), "--reference", str(other_model), *options)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.rstrip().endswith(f"model is 'smollm2', this sweep's {options[options.index('--model') + 1]!r}")
    assert not fresh.exists()  # refused before training
