"""`telly report` on hand-made run folders."""

import json

import pytest

from telly import UserError
from telly.report import REPORT_FILES, comparison_table, load_run, seeds_table, write_report


def make_run(folder, freeze, seconds, mrr, method="telly", task="code-search"):
    """A finished run of two epochs; the first takes 10 s longer (filling a cache, say)."""
    folder.mkdir()
    metrics = {"task": task, "model": "tiny", "method": method, "freeze": freeze, "selection_metric": "mrr",
               "test": {"mrr": mrr}, "zero_shot_test": {"mrr": 0.5}, "seconds_per_epoch": seconds + 5,
               "epoch_seconds": [seconds + 10, seconds], "best_epoch": 2, "peak_rss_mb": 1234.4,
               "params": {"total": 2_000_000, "trainable": 500_000, "percent_trainable": 25.0}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return load_run(folder)


def test_table_rows_and_speedups(tmp_path):
    runs = [make_run(tmp_path / "full", -1, 120.0, 0.7), make_run(tmp_path / "k3", 3, 40.0, 0.69),
            make_run(tmp_path / "lora", -1, 60.0, 0.65, method="lora")]
    rows = comparison_table(runs).splitlines()
    assert rows[0] == ("| run | variant | zero-shot mrr | mrr | Δ mrr vs full | trainable / total params | s/epoch (1st) | "
                       "s/epoch (later) | speedup vs full | best epoch | steps | device | peak RSS (MB) | "
                       "peak device memory (MB) |")
    # Speedups compare the later epochs (120 / 40, 120 / 60), not the first (130 / 50). The metrics
    # files predate the device fields, so those cells are n/a.
    assert rows[2] == "| full | full | 0.5000 | 0.7000 | +0.0000 | 0.50M / 2.00M (25.0%) | 130.0 | 120.0 | 1.00x | 2 | n/a | n/a | 1234 | n/a |"
    assert rows[3] == "| k3 | K=3 | 0.5000 | 0.6900 | -0.0100 | 0.50M / 2.00M (25.0%) | 50.0 | 40.0 | 3.00x | 2 | n/a | n/a | 1234 | n/a |"
    assert rows[4] == "| lora | LoRA | 0.5000 | 0.6500 | -0.0500 | 0.50M / 2.00M (25.0%) | 70.0 | 60.0 | 2.00x | 2 | n/a | n/a | 1234 | n/a |"


def test_the_device_precision_and_device_memory_are_shown(tmp_path):
    full = make_run(tmp_path / "full", -1, 120.0, 0.7)
    full.metrics.device, full.metrics.device_name, full.metrics.precision = "cuda:0", "NVIDIA H200", "bf16"
    full.metrics.peak_device_memory_mb = 5120.4
    row = comparison_table([full]).splitlines()[2]
    assert row.endswith("| cuda:0 (NVIDIA H200), bf16 | 1234 | 5120 |")


def test_single_epoch_runs_compare_their_only_epoch(tmp_path):
    full, k3 = make_run(tmp_path / "full", -1, 100.0, 0.7), make_run(tmp_path / "k3", 3, 40.0, 0.69)
    for run, seconds in ((full, 90.0), (k3, 30.0)):
        run.metrics.epoch_seconds = [seconds]
    rows = comparison_table([full, k3]).splitlines()
    assert "| 30.0 | n/a | 3.00x |" in rows[3]


def test_runs_of_different_tasks_are_refused(tmp_path):
    runs = [make_run(tmp_path / "a", -1, 1.0, 0.1), make_run(tmp_path / "b", -1, 1.0, 0.1, task="clone-detection")]
    with pytest.raises(UserError, match="runs of different tasks"):
        comparison_table(runs)


def test_time_budget_runs_compare_steps_per_second_and_plot_quality_over_time(tmp_path):
    """Runs stopped by --time-budget before an epoch ended: the speedup is steps per training second."""
    full, k3 = make_run(tmp_path / "full", -1, 0.0, 0.7), make_run(tmp_path / "k3", 3, 0.0, 0.69)
    for run, steps in ((full, 40), (k3, 100)):
        run.metrics.epoch_seconds, run.metrics.steps, run.metrics.train_seconds = [], steps, 20.0
        run.metrics.history = [{"train_seconds": 10.0, "valid": {"mrr": 0.5}}, {"train_seconds": 20.0, "valid": {"mrr": 0.6}}]
    rows = comparison_table([full, k3]).splitlines()
    assert rows[3] == "| k3 | K=3 | 0.5000 | 0.6900 | -0.0100 | 0.50M / 2.00M (25.0%) | n/a | n/a | 2.50x | 2 | 100 | n/a | 1234 | n/a |"
    write_report([full, k3], tmp_path, "time budget")
    assert all((tmp_path / name).stat().st_size > 0 for name in REPORT_FILES)
    assert (tmp_path / "quality_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def seeded_runs(tmp_path, name, freeze, scores):
    runs = []
    for seed, score in enumerate(scores, start=1):
        run = make_run(tmp_path / f"{name}-seed{seed}", freeze, 10.0, score)
        run.metrics.seed = seed
        runs.append(run)
    return runs


def test_over_seeds_a_difference_is_significant_only_when_its_interval_excludes_zero(tmp_path):
    runs = (seeded_runs(tmp_path, "full", -1, [0.70, 0.72, 0.71]) + seeded_runs(tmp_path, "k3", 3, [0.69, 0.70, 0.705])
            + seeded_runs(tmp_path, "k5", 5, [0.60, 0.61, 0.605]))
    rows = seeds_table(runs)
    # Student's t for 3 values: t(0.975, 2) = 4.302653; half-width = t * sd / sqrt(3).
    # full: mean 0.71, sd 0.01 -> ±0.024841; K=3 0.69, 0.70, 0.705: sd 0.007638 -> ±0.018975. K=3 - full by seed: -0.01, -0.02, -0.005 -> mean -0.011667,
    # sd 0.007638 -> ±0.018975: [-0.0306, +0.0073] holds 0. k5: -0.10, -0.11, -0.105 -> ±0.012421.
    assert rows[1] == ["full", "1, 2, 3", "0.7100 [0.6852, 0.7348]", "n/a", "n/a"]
    assert rows[2] == ["K=3", "1, 2, 3", "0.6983 [0.6794, 0.7173]", "-0.0117 [-0.0306, +0.0073]", "no"]
    assert rows[3] == ["K=5", "1, 2, 3", "0.6050 [0.5926, 0.6174]", "-0.1050 [-0.1174, -0.0926]", "yes"]
    markdown = write_report(runs, tmp_path, "seeds")
    assert "## Over seeds" in markdown and "<h2>Over seeds</h2>" in (tmp_path / "report.html").read_text()


def test_each_run_is_compared_with_the_full_fine_tuning_of_its_own_seed(tmp_path):
    runs = seeded_runs(tmp_path, "full", -1, [0.70, 0.72]) + seeded_runs(tmp_path, "k3", 3, [0.69, 0.70, 0.68])
    runs[1].metrics.epoch_seconds = [30.0, 20.0]  # full's seed 2 ran twice as fast as seed 1 (10 s later epochs)
    rows = [row.split(" | ") for row in comparison_table(runs).splitlines()[2:]]
    delta, speedup = rows[0].index("+0.0000"), rows[0].index("1.00x")
    assert [(row[0], row[delta], row[speedup]) for row in rows] == [
        ("| full-seed1", "+0.0000", "1.00x"), ("| full-seed2", "+0.0000", "1.00x"),
        ("| k3-seed1", "-0.0100", "1.00x"), ("| k3-seed2", "-0.0200", "2.00x"),
        ("| k3-seed3", "-0.0200", "1.00x")]  # seed 3 has no full run: the first one's


def test_a_second_run_of_a_variant_and_seed_counts_in_neither_table(tmp_path):
    again = make_run(tmp_path / "full-again", -1, 10.0, 0.90)
    again.metrics.seed = 1
    runs = seeded_runs(tmp_path, "full", -1, [0.70, 0.72]) + seeded_runs(tmp_path, "k3", 3, [0.69, 0.70]) + [again]
    rows = [row.split(" | ") for row in comparison_table(runs).splitlines()[2:]]
    delta = rows[0].index("+0.0000")
    assert [row[delta] for row in rows] == ["+0.0000", "+0.0000", "-0.0100", "-0.0200", "+0.2000"]
    over_seeds = seeds_table(runs)
    assert over_seeds[1][:2] == ["full", "1, 2"] and over_seeds[1][2].startswith("0.7100 ")
    assert over_seeds[2][3].startswith("-0.0150 ")  # against 0.70 and 0.72, not the later 0.90


def test_one_seed_per_variant_has_no_table_over_seeds(tmp_path):
    assert seeds_table([make_run(tmp_path / "full", -1, 10.0, 0.7), make_run(tmp_path / "k3", 3, 10.0, 0.6)]) is None
