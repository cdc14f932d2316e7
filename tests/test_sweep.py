"""`telly sweep`: variants, the report, skip/resume of a sweep started again, and the Ray executor."""

import json
import subprocess
import sys
import time

import pytest

import telly.pipeline
from telly import FinetuneConfig, UserError
from telly.checkpoints import CHECKPOINTS
from telly.cli import main
from telly.report import load_run
from telly.sweep import Variant, _finetune_entry, _finetune_for_ray, sweep_variants


def test_variants_are_full_then_each_k_then_lora():
    assert sweep_variants(4, "all", lora=True) == [
        Variant("full", "telly", -1), Variant("k0", "telly", 0), Variant("k1", "telly", 1), Variant("k2", "telly", 2),
        Variant("k3", "telly", 3), Variant("lora", "lora", -1),
    ]
    assert [v.name for v in sweep_variants(6, "5, 3,3", lora=False)] == ["full", "k3", "k5"]
    assert sweep_variants(4, "2", lora=True, progressive=True)[2:] == [Variant("progressive", "telly", "progressive"),
                                                                       Variant("lora", "lora", -1)]
    assert [v.name for v in sweep_variants(6, "none", lora=False, progressive=True)] == ["full", "progressive"]


def test_each_variant_runs_once_per_seed_in_a_folder_of_its_own_seed_by_seed():
    variants = sweep_variants(4, "2", lora=True, seeds="3,1,3")
    assert [(v.name, v.seed) for v in variants] == [("full-seed3", 3), ("k2-seed3", 3), ("lora-seed3", 3),
                                                    ("full-seed1", 1), ("k2-seed1", 1), ("lora-seed1", 1)]
    assert [(v.name, v.seed) for v in sweep_variants(4, "2", lora=False, seeds="7")] == [("full", 7), ("k2", 7)]


@pytest.mark.parametrize("ks, seeds, message", [
    ("0,6", None, r"K=6 is out of range .* \(0\.\.5\)"), ("two", None, r"--ks must be 'all', 'none' or"),
    ("", None, r"--ks must be 'all', 'none' or comma-separated integers, got ''"),
    ("1", "1,x", r"--seeds must be comma-separated integers, got '1,x'"),
])
def test_bad_ks_and_seeds_are_refused(ks, seeds, message):
    with pytest.raises(UserError, match=message):
        sweep_variants(6, ks, lora=False, seeds=seeds)


def sweep_argv(model_dir, data_dir, out, *extra):
    return ["sweep", "--task", "code-search", "--model", str(model_dir), "--data", str(data_dir), "--out", str(out),
            "--ks", "1,3", "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--max-code-len", "48",
            "--max-nl-len", "24", "--max-train-examples", "64", "--max-eval-examples", "32", "--seed", "2", *extra]


@pytest.fixture(scope="module")
def sweep(tiny_bert_dir, email_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "sweep"
    assert main(sweep_argv(tiny_bert_dir, email_corpus, out, "--lora")) == 0
    return out


def test_every_variant_ran_with_the_same_data_and_seed(sweep):
    runs = {name: load_run(sweep / name).metrics for name in ("full", "k1", "k3", "lora")}
    assert [(run.method, run.freeze) for run in runs.values()] == [("telly", -1), ("telly", 1), ("telly", 3), ("lora", -1)]
    assert {run.examples["train"] for run in runs.values()} == {64}
    assert {json.loads((sweep / name / "config.json").read_text())["seed"] for name in runs} == {2}
    assert runs["k3"].params["trainable"] < runs["k1"].params["trainable"] < runs["full"].params["trainable"]


def test_report_holds_the_paper_columns_and_plots(sweep):
    markdown = (sweep / "report.md").read_text()
    header = markdown.splitlines()[2]
    for column in ("Δ mrr vs full", "trainable / total params", "s/epoch (1st)", "s/epoch (later)",
                   "speedup vs full", "best epoch", "peak RSS (MB)"):
        assert column in header
    full, k1 = (load_run(sweep / name).metrics for name in ("full", "k1"))
    k1_row = next(line for line in markdown.splitlines() if line.startswith("| k1 |"))
    assert f"| {k1.test['mrr'] - full.test['mrr']:+.4f} |" in k1_row
    later = lambda run: sum(run.epoch_seconds[1:]) / len(run.epoch_seconds[1:])
    assert f"| {later(full) / later(k1):.2f}x |" in k1_row
    assert "<table>" in (sweep / "report.html").read_text() and "<td>k1</td>" in (sweep / "report.html").read_text()
    for plot in ("metric_vs_k.png", "seconds_vs_k.png", "quality_vs_time.png"):
        assert (sweep / plot).read_bytes()[:4] == b"\x89PNG"
    assert [run["name"] for run in json.loads((sweep / "report.json").read_text())["runs"]] == ["full", "k1", "k3", "lora"]


def test_a_sweep_started_again_skips_finished_variants_and_reruns_the_rest(sweep, tiny_bert_dir, email_corpus):
    finished = {name: (sweep / name / "metrics.json").read_bytes() for name in ("full", "k1", "lora")}
    k3_metrics = load_run(sweep / "k3")
    (sweep / "k3" / "metrics.json").unlink()  # as if the sweep had been killed during k3
    assert main(sweep_argv(tiny_bert_dir, email_corpus, sweep, "--lora")) == 0
    assert {name: (sweep / name / "metrics.json").read_bytes() for name in finished} == finished
    rerun = load_run(sweep / "k3")
    assert rerun.metrics.test == k3_metrics.metrics.test  # same seed, same result
    second_start = (sweep / "sweep-log.txt").read_text().split("sweep variant full:")[2]
    assert second_start.startswith(" finished earlier, skipped") and "sweep variant k3: to run" in second_start


def test_report_rebuilds_from_the_run_folders(sweep, tmp_path):
    assert main(["report", str(sweep), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text().splitlines()[4:] == (sweep / "report.md").read_text().splitlines()[4:]


def test_ray_executor_runs_the_variants_as_ray_tasks(tiny_bert_dir, email_corpus, tmp_path):
    import ray  # in the test extras: the Ray executor is always tested
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray-sweep"
        argv = sweep_argv(tiny_bert_dir, email_corpus, out, "--executor", "ray")
        argv[argv.index("1,3")] = "3"
        assert main(argv) == 0
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    runs = [load_run(out / name).metrics for name in ("full", "k3")]
    assert [run.freeze for run in runs] == [-1, 3]
    # The same variant gives the same metrics whichever executor ran it.
    local = tmp_path / "local-sweep"
    argv = sweep_argv(tiny_bert_dir, email_corpus, local)
    argv[argv.index("1,3")] = "3"
    assert main(argv) == 0
    assert load_run(local / "k3").metrics.test == runs[1].test


def test_a_variant_ends_when_its_sweep_is_killed(tiny_bert_dir, email_corpus, tmp_path):
    """A sweep killed alone (no Ctrl-C reaching its variant's process) does not leave the variant
    training and writing into its folder: the variant, which shares the sweep's stderr, ends too
    and closes it. Without that, it would train its 1,000 epochs."""
    out = tmp_path / "killed-sweep"
    argv = sweep_argv(tiny_bert_dir, email_corpus, out, "--epochs", "1000", "--checkpoint-every", "1")
    sweep = subprocess.Popen([sys.executable, "-m", "telly.cli", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 1800  # a guard against a hang, far beyond any machine's speed
    while not any((out / "full" / CHECKPOINTS).glob("step-*")):  # the variant's process trains
        assert sweep.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    sweep.kill()
    sweep.communicate(timeout=600)  # returns once every process writing to its stderr has ended
    assert not (out / "full" / "metrics.json").exists()


def test_a_sweep_over_seeds_reports_each_variant_with_its_interval(tiny_bert_dir, email_corpus, tmp_path):
    out = tmp_path / "seeds"
    argv = sweep_argv(tiny_bert_dir, email_corpus, out, "--seeds", "1,2", "--epochs", "1")
    argv[argv.index("1,3")] = "3"
    assert main(argv) == 0
    runs = {name: load_run(out / name).metrics for name in ("full-seed1", "full-seed2", "k3-seed1", "k3-seed2")}
    assert {name: run.seed for name, run in runs.items()} == {"full-seed1": 1, "full-seed2": 2, "k3-seed1": 1, "k3-seed2": 2}
    report = (out / "report.md").read_text().split("## Over seeds")[1]
    k3 = next(line for line in report.splitlines() if line.startswith("| K=3 |"))
    differences = [runs[f"k3-seed{s}"].test["mrr"] - runs[f"full-seed{s}"].test["mrr"] for s in (1, 2)]
    assert k3.split(" | ")[3].startswith(f"{sum(differences) / 2:+.4f} [")


@pytest.mark.parametrize("error, line", [
    (UserError("--freeze 9 is out of range"), "--freeze 9 is out of range"),
    (OSError(28, "No space left on device", "/runs/k1/best"), "No space left on device: /runs/k1/best"),
])
def test_both_executors_end_a_failed_variant_as_the_cli_does(error, line, monkeypatch, capsys, tmp_path):
    def failing(config):
        raise error

    monkeypatch.setattr(telly.pipeline, "finetune", failing)
    config = FinetuneConfig(task="code-search", model="m", data="d", out=str(tmp_path / "k1"))
    assert _finetune_for_ray(config) == f"variant k1: {line}"  # Ray: the failure as text, the others still run
    with pytest.raises(SystemExit) as exit_:
        _finetune_entry(config)  # local: the variant's own process
    assert exit_.value.code == 2 and capsys.readouterr().err == f"telly: error: {line}\n"


def test_a_bug_in_a_variant_is_not_hidden_behind_one_line(monkeypatch, tmp_path):
    def buggy(config):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(telly.pipeline, "finetune", buggy)
    with pytest.raises(ZeroDivisionError):  # Ray reports it with its traceback
        _finetune_for_ray(FinetuneConfig(task="code-search", model="m", data="d", out=str(tmp_path / "k1")))
