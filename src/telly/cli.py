"""The `telly` command. A user mistake ends in one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import types
import typing
from pathlib import Path

from telly.config import GROUPS, FinetuneConfig, check_numbers, check_seed, flag, flat_fields
from telly.data.corpus import MAX_FILE_MB
from telly.data.languages import LANGUAGES
from telly.errors import UserError, at_the_boundary
from telly.study.properties import PROPERTIES, SUBWORDS
from telly.sweep import EXECUTORS

# FinetuneConfig settings (flat names or groups) a sweep sets per variant, or has no use for.
SET_BY_SWEEP = frozenset({"freeze", "method", "resume", "overwrite", "auto_freeze"})
# ... and those that mean nothing to `telly recommend`, whose brief run is full fine-tuning for one epoch.
UNUSED_BY_RECOMMEND = frozenset({"freeze", "method", "resume", "overwrite", "epochs", "checkpoint_every", "patience",
                                 "select_by", "lora", "cache", "time_budget", "progressive"})


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message} (see '{self.prog} --help')")


def add_config_options(parser: argparse.ArgumentParser, exclude: frozenset[str] = frozenset(),
                       helps: dict[str, str] | None = None) -> None:
    """One option per FinetuneConfig setting not in `exclude` (flat names or group names), its flat
    name as `dest`: `max_code_len: int` → `--max-code-len INT`, `lora.rank` → `--lora-rank INT`.
    `helps` words a setting for this command where it means something else in it (`--out`)."""
    for name, group, field in flat_fields():
        if name in exclude or group in exclude:
            continue
        kind = typing.get_type_hints(GROUPS[group] if group else FinetuneConfig)[field.name]
        if isinstance(kind, types.UnionType):  # `int | None`
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        help_text = (helps or {}).get(name, field.metadata["help"])
        if kind is bool:  # a switch that turns its default around: --overwrite, --no-cache
            action = "store_false" if field.default else "store_true"
            parser.add_argument(flag(name, field), dest=name, action=action, help=help_text)
            continue
        shown = field.metadata.get("required") or field.default in (None, "") or "default" in help_text
        parser.add_argument(
            flag(name, field), dest=name, type=field.metadata.get("parse", kind), default=field.default,
            required=field.metadata.get("required", False), metavar=field.metadata.get("metavar", kind.__name__.upper()),
            help=help_text if shown else f"{help_text} (default: {field.default})",
        )


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The FinetuneConfig of the options `add_config_options` added (the others keep their defaults)."""
    return FinetuneConfig.from_flat({name: getattr(args, name) for name, _, _ in flat_fields() if hasattr(args, name)})


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """--language and --max-file-mb, for the commands that read source files."""
    parser.add_argument("--language", choices=list(LANGUAGES), help="the sources' language (default: told by "
                        "the file name endings of the sources; Python's standard library when none are given)")
    parser.add_argument("--max-file-mb", type=float, default=MAX_FILE_MB, metavar="MB",
                        help="skip (and count) source files larger than this; files that are not regular files are "
                             f"skipped too (default: {MAX_FILE_MB:g})")


def add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="*", type=Path, help="source folders, files or .zip archives (default: the "
                        "language's standard sources: this Python's standard library, the JDK's src.zip, Ruby's stdlib)")
    add_source_options(parser)
    parser.add_argument("--out", type=Path, required=True, help="data folder to write (one that is not empty is "
                        "refused unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace the data set in --out, in one step")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split by file (default: 0)")
    parser.add_argument("--jobs", type=int, metavar="N", help="processes that read the files and make the records, "
                        "with the same data whatever N (default: one per available core; 1: this process alone)")
    parser.set_defaults(handler=run_data_build, after_interrupt="nothing was written; the --out folder is as it was")


def build_parser() -> Parser:
    parser = Parser(prog="telly", description="Study and efficiently fine-tune pre-trained code models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    data = commands.add_parser("data", help="build datasets from real source code")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    build = data_commands.add_parser("build", help="a task's train/valid/test files from Python, Java or Ruby source")
    add_build_options(build)
    build.add_argument("--task", default="code-search", help="the task to build for (default: code-search): "
                       "CodeSearchNet for code-search/code-summarization, BigCloneBench for clone-detection, "
                       "CONCODE for code-generation, CodeXGLUE line-level for code-completion")
    clones = data_commands.add_parser("clones", help="BigCloneBench-format clone pairs (= build --task clone-detection)")
    add_build_options(clones)
    clones.set_defaults(task="clone-detection")

    finetune = commands.add_parser("finetune", help="fine-tune a model on a task (Telly-K with --freeze K)")
    add_config_options(finetune)
    finetune.set_defaults(handler=run_finetune, after_interrupt="the same command with --resume continues the run from "
                          "its last checkpoint; a run stopped before its first one left nothing behind")

    probe = commands.add_parser("probe", help="which code properties each layer encodes (lexical, syntactic, structural, semantic)")
    probe.add_argument("--model", help="hub id, local model folder or 'default' (default: the run's model with --run, else 'default')")
    probe.add_argument("--run", type=Path, help="probe the fine-tuned model of this finished run instead of the pre-trained one")
    probe.add_argument("--control", action="store_true", help="probe a randomly initialised model of the same architecture")
    probe.add_argument("--property", default="all", choices=[*PROPERTIES, "all"], help="the property to probe "
                       "(default: all: every property the inputs allow; semantic needs --poj104)")
    probe.add_argument("--functions", type=int, default=2000, help="functions to probe with, 20%% of them held out for "
                       "testing; also the number of POJ-104 programs (default: 2000)")
    probe.add_argument("--sources", type=Path, nargs="+", help="source folders, files or .zip archives (default: the "
                       "language's standard sources)")
    add_source_options(probe)
    probe.add_argument("--max-length", type=int, default=256, help="max sub-word tokens per function (default: 256)")
    probe.add_argument("--lexical-subword", default="last", choices=SUBWORDS, help="which sub-word of a code token the "
                       "lexical probe reads: last (the paper's) or first (default: last)")
    probe.add_argument("--poj104", type=Path, metavar="DIR", help="CodeXGLUE's Clone-detection-POJ-104 folder "
                       "(train.jsonl, test.jsonl) for the semantic probe")
    probe.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the test items for the "
                       "95%% intervals (default: 1000)")
    probe.add_argument("--weight-seeds", type=int, default=3, help="seeds the weighted-layer probe trains with, to show "
                       "how much its layer weights vary (default: 3)")
    add_study_options(probe, default_out=None)
    probe.set_defaults(run_command=run_probe)

    compare = commands.add_parser("compare", help="RSA and linear CKA per layer, pre-trained vs fine-tuned")
    compare.add_argument("--run", type=Path, nargs="+", required=True, help="finished run folders (one table column and plot line each)")
    compare.add_argument("--model", help="the model the run started from (checked against the run's config)")
    compare.add_argument("--inputs", type=int, default=1000, help="inputs to compare on (default: 1000)")
    compare.add_argument("--input-set", default="code", choices=["code", "task"], help="code: the same functions of "
                         "--sources for every run, as the paper; task: each run's own test inputs (default: code)")
    compare.add_argument("--sources", type=Path, nargs="+", help="where --input-set code takes its functions from "
                         "(default: the language's standard sources)")
    add_source_options(compare)
    compare.add_argument("--data", type=Path, help="with --input-set task: the run's data folder, if it moved "
                         "(default: as in the run's config)")
    compare.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the inputs for the 95%% "
                         "intervals (default: 200)")
    add_study_options(compare, default_out="RUN/compare for a single run")
    compare.set_defaults(run_command=run_compare)

    recommend = commands.add_parser("recommend", help="propose K from a brief fine-tuning (what --freeze auto uses)")
    add_config_options(recommend, exclude=UNUSED_BY_RECOMMEND, helps={
        "out": "folder to write recommendation.json, .md and .png into, and the brief run (brief-run/)"})
    recommend.set_defaults(handler=run_recommend)

    sweep = commands.add_parser("sweep", help="full fine-tuning, Telly-K for several K and LoRA, then the report")
    add_config_options(sweep, exclude=SET_BY_SWEEP, helps={
        "out": "sweep folder to write: a run folder per variant (full, k0, k1, ..., lora) and report.md, .html, .json "
               "and plots"})
    sweep.add_argument("--ks", default="all", help="the K values: 'all' (0..L-1), 'none' (full fine-tuning against "
                       "--progressive or --lora alone) or e.g. 0,3,5 (default: all)")
    sweep.add_argument("--lora", action="store_true", help="also run the LoRA baseline (--lora-rank, --lora-alpha, --lora-targets)")
    sweep.add_argument("--progressive", action="store_true", help="also run --freeze progressive (--progressive-every, "
                       "--progressive-percentile)")
    sweep.add_argument("--seeds", help="comma-separated seeds, e.g. 1,2,3: every variant runs once per seed and the "
                       "report gives means with 95%% intervals (default: --seed alone)")
    sweep.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local: variants one after another, each in its own process; ray: as Ray tasks (default: local)")
    sweep.set_defaults(handler=run_sweep, after_interrupt="the same command continues the sweep: finished variants "
                       "are kept, the others resume from their last checkpoint")

    report = commands.add_parser("report", help="compare finished runs (or the runs of a sweep folder) side by side")
    report.add_argument("runs", nargs="+", type=Path, help="run folders or sweep folders")
    report.add_argument("--out", type=Path, help="write report.md/.html/.json and plots here (default: the sweep folder "
                        "when given one; else print the table only)")
    report.set_defaults(handler=run_report)

    export = commands.add_parser("export", help="a finished run as a Hugging Face model folder (and sentence-transformers, "
                                 "PEFT adapter, model card)")
    export.add_argument("run", type=Path, help="a finished run folder")
    export.add_argument("--out", type=Path, required=True, help="folder to write (new or empty)")
    export.add_argument("--adapter", action="store_true", help="a LoRA run: also write its adapters as a PEFT folder "
                        "(OUT/adapter); the model folder holds them merged either way")
    export.set_defaults(handler=run_export)

    predict = commands.add_parser("predict", help="a finished run's predictions in the files CodeXGLUE's evaluators read")
    predict.add_argument("run", type=Path, help="a finished run folder")
    predict.add_argument("--data", type=Path, help="data folder in the task's format (default: the run's)")
    predict.add_argument("--split", default="test", choices=["train", "valid", "test"], help="(default: test)")
    predict.add_argument("--out", type=Path, required=True, help="the prediction file to write (and OUT.gold, the "
                         "answers, for code search and summarization)")
    add_device_options(predict)
    predict.set_defaults(handler=run_predict)

    search = commands.add_parser("search", help="the functions of a source tree that best match a query, by a "
                                 "code-search run's encoder (indexed once, kept up to date)")
    search.add_argument("run", type=Path, help="a finished code-search run folder")
    search.add_argument("query", help="what the function does, in words")
    search.add_argument("--sources", type=Path, nargs="+", help="source folders, files or .zip archives to search "
                        "(default: the language's standard sources)")
    add_source_options(search)
    search.add_argument("--top", type=int, default=10, help="how many matches to print (default: 10)")
    search.add_argument("--json", action="store_true", help="print the matches as JSON")
    search.add_argument("--index", type=Path, help="the index folder (default: one per run, sources and language "
                        "under ~/.cache/telly/search)")
    add_device_options(search)
    search.set_defaults(handler=run_search)

    complete = commands.add_parser("complete", help="a code-completion run's prediction of a line of a source file")
    complete.add_argument("run", type=Path, help="a finished code-completion run folder")
    complete.add_argument("place", metavar="FILE:LINE", help="the line to predict from the lines above it (1-based)")
    add_device_options(complete)
    complete.set_defaults(handler=run_complete)

    summarize = commands.add_parser("summarize", help="a code-summarization run's summary of a function of a source file")
    summarize.add_argument("run", type=Path, help="a finished code-summarization run folder")
    summarize.add_argument("place", metavar="FILE:FUNCTION", help="the function, by name or as Class.method")
    summarize.add_argument("--language", choices=list(LANGUAGES), help="the file's language (default: told by its name)")
    add_device_options(summarize)
    summarize.set_defaults(handler=run_summarize)
    return parser


def add_study_options(parser: argparse.ArgumentParser, default_out: str | None) -> None:
    if default_out:
        parser.add_argument("--out", type=Path, help=f"folder for the JSON, Markdown and PNG results (default: {default_out})")
    else:
        parser.add_argument("--out", type=Path, required=True, help="folder for the JSON, Markdown and PNG results")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where representations are cached (default: ~/.cache/telly/features)")
    parser.add_argument("--no-feature-cache", action="store_true", help="compute representations without reading or writing the cache")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own Python code to run")
    add_device_options(parser)
    parser.set_defaults(handler=run_study)


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and --mixed-precision, worded as FinetuneConfig words them."""
    for name in ("device", "mixed_precision"):
        field = next(f for f in dataclasses.fields(FinetuneConfig) if f.name == name)
        parser.add_argument("--" + name.replace("_", "-"), default=field.default,
                            help=f"{field.metadata['help']} (default: {field.default})")


def run_study(args: argparse.Namespace) -> None:
    """Shared by probe and compare: check the device and the cache, then run the command."""
    from telly.runtime import resolve_runtime
    from telly.study.representations import FeatureCache, default_cache_dir

    check_option_numbers(args)
    runtime = resolve_runtime(args.device, args.mixed_precision)
    cache = FeatureCache(None if args.no_feature_cache else args.cache_dir or default_cache_dir())
    args.run_command(args, cache, runtime)


def check_option_numbers(args: argparse.Namespace) -> None:
    """The numbers of a command without FinetuneConfig options, checked as FinetuneConfig checks its own."""
    check_seed(args.seed)
    check_numbers({"--" + name.replace("_", "-"): value for name, value in vars(args).items()})


@contextlib.contextmanager
def output_folder(out: Path, worth_keeping: typing.Callable[[Path], bool] = lambda folder: False):
    """`out`, created up front (so a folder that cannot be written fails before the work), for the
    block to write results into; if the block fails, a folder it created is removed again."""
    from telly.files import removed_on_failure

    if out.exists() and not out.is_dir():
        raise UserError(f"output path is a file, not a folder: {out}")
    with removed_on_failure(out, worth_keeping):
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create output folder {out}: {error.strerror}") from None
        yield out


def write_results(out: Path, name: str, report: dict, markdown: str, panels, title: str) -> None:
    """`name`.json, `name`.md and `name`.png in `out`, and the Markdown on stdout."""
    from telly.files import atomic_write_text, write_json
    from telly.study.plots import plot_layers

    try:
        write_json(out / f"{name}.json", report)
        atomic_write_text(out / f"{name}.md", markdown)
        plot_layers(out / f"{name}.png", panels, title)
    except OSError as error:
        raise UserError(f"cannot write results to {out}: {error.strerror or error}") from None
    print(markdown, end="")
    print(f"wrote {out}/{name}.json, .md and .png")


def sources_and_language(sources: list[Path] | None, language: str | None) -> tuple[list[Path], str]:
    """The sources to read and their language: either may be left out, never both chosen wrongly."""
    from telly.data import detect_language, language_named

    if sources:
        # With no source file of any language, Python's reader says what it found missing.
        return sources, language or detect_language(sources) or "python"
    language = language or "python"
    defaults = language_named(language).default_sources()
    missing = [path for path in defaults if not path.exists()]
    if missing:
        raise UserError(f"no {language} sources given and the default {missing[0]} is missing "
                        f"(install it with 'make data-{language}', or pass source folders)")
    return defaults, language


def check_bootstrap(resamples: int) -> None:
    if resamples < 1:
        raise UserError(f"--bootstrap must be at least 1, got {resamples}")


def run_probe(args: argparse.Namespace, cache, runtime) -> None:
    if args.run and args.control:
        raise UserError("--run and --control exclude each other: a control is a random model, not a trained one")
    if args.max_length < 8:
        raise UserError(f"--max-length must be at least 8, got {args.max_length}")
    check_bootstrap(args.bootstrap)
    if args.weight_seeds < 1:
        raise UserError(f"--weight-seeds must be at least 1, got {args.weight_seeds}")
    with output_folder(args.out):
        probe_and_write(args, cache, runtime)


def probe_and_write(args: argparse.Namespace, cache, runtime) -> None:
    from telly.data.poj104 import read_poj104
    from telly.study.probe import ProbeOptions, probe_markdown, run_probe_study
    from telly.study.probe_data import TEST_FRACTION, build_probe_set
    from telly.study.properties import properties_to_probe
    from telly.study.representations import control_model, pretrained_model, run_models

    properties = properties_to_probe(args.property, args.poj104 is not None)
    poj104 = read_poj104(args.poj104, args.functions, TEST_FRACTION, args.seed) if "semantic" in properties else None
    if args.run:
        run = run_models(args.run, args.model, runtime)
        model_name, model = run.config.model, run.finetuned
    elif args.control:
        model_name = args.model or "default"
        model = control_model(model_name, args.seed, args.trust_remote_code, runtime)
    else:
        model_name = args.model or "default"
        model = pretrained_model(model_name, args.trust_remote_code, runtime)
    sources, language = sources_and_language(args.sources, args.language)
    probe_set = build_probe_set(sources, args.functions, args.seed, language=language, max_file_mb=args.max_file_mb)
    options = ProbeOptions(max_length=args.max_length, lexical_subword=args.lexical_subword, seed=args.seed,
                           resamples=args.bootstrap, weight_seeds=args.weight_seeds)
    report = run_probe_study(model, model_name, probe_set, properties, options, cache, poj104)
    results = report["properties"]
    panels = [
        ("probe score per layer (95% intervals)", "score", {name: result["layers"] for name, result in results.items()},
         {name: result["layer_intervals"] for name, result in results.items()}),
        ("weighted-layer probe: layer weights (seed mean)", "weight", {name: result["weights"] for name, result in results.items()}),
    ]
    write_results(args.out, "probe", report, probe_markdown(report), panels, f"{model_name} ({model.description})")


def run_compare(args: argparse.Namespace, cache, runtime) -> None:
    from telly.run_folder import read_config
    from telly.study.compare import compare_markdown, compare_panels, compare_run, shared_code

    if args.out is None and len(args.run) > 1:
        raise UserError("pass --out to compare several runs (one table and plot for all)")
    if args.input_set == "task" and (args.sources or args.language):
        raise UserError("--sources and --language choose the functions of --input-set code, not a task's inputs")
    if args.input_set == "code" and args.data is not None:
        raise UserError("--data names a run's data folder for --input-set task; --input-set code reads --sources")
    if args.data is not None and len(args.run) > 1:
        raise UserError("--data replaces one run's data folder; compare several runs without it")
    check_bootstrap(args.bootstrap)
    for run in args.run:  # every run readable before the shared code is read
        read_config(run)
    with output_folder(args.out or args.run[0] / "compare") as out:
        code = shared_code(*sources_and_language(args.sources, args.language), args.inputs, args.seed, args.max_file_mb) \
            if args.input_set == "code" else None
        comparisons = [compare_run(run, args.model, args.inputs, data=args.data, cache=cache, runtime=runtime, code=code,
                                   resamples=args.bootstrap, seed=args.seed) for run in args.run]
        write_results(out, "compare", {"comparisons": comparisons}, compare_markdown(comparisons),
                      compare_panels(comparisons), "representational similarity per layer")


def run_recommend(args: argparse.Namespace) -> None:
    from telly.runtime import resolve_runtime, start_processes
    from telly.study.recommend import recommend_k, recommendation_markdown

    config = config_from_args(args)
    runtime = resolve_runtime(config.device, config.mixed_precision, start_processes(config.device))
    with output_folder(Path(config.out)) as out:
        recommendation = recommend_k(config, out, runtime)
        panel = ("similarity to the pre-trained model", recommendation.measure.upper(), {
            recommendation.measure.upper(): recommendation.similarities,
            "threshold": [recommendation.threshold] * len(recommendation.similarities),
        })
        markdown = recommendation_markdown(recommendation, config.task, config.model)
        write_results(out, "recommendation", recommendation.to_dict(), markdown, [panel],
                      f"recommended K={recommendation.k}")


def run_data_build(args: argparse.Namespace) -> None:
    from telly.data import BUILDERS
    from telly.data.parallel import check_jobs

    if args.task not in BUILDERS:
        raise UserError(f"unknown task {args.task!r}; choose one of: {', '.join(BUILDERS)}")
    check_option_numbers(args)
    if args.jobs is not None:
        check_jobs(args.jobs)
    sources, language = sources_and_language(args.sources, args.language)
    summary = BUILDERS[args.task](sources, args.out, seed=args.seed, language=language, overwrite=args.overwrite,
                                  max_file_mb=args.max_file_mb, jobs=args.jobs)
    print(summary)
    print(f"wrote {args.task} {language} data to {args.out}")


def run_finetune(args: argparse.Namespace) -> None:
    from telly.pipeline import finetune

    metrics = finetune(config_from_args(args))
    if metrics is not None:  # None in the other processes of an `accelerate launch` run
        print(f"wrote {args.out}/metrics.json; test {metrics.selection_metric} {metrics.selection_score:.4f}")


def run_sweep(args: argparse.Namespace) -> None:
    from telly.models.layers import find_backbone
    from telly.models.load import encoder_class, load_pretrained
    from telly.report import load_run, write_report
    from telly.sweep import has_progress, sweep_variants
    from telly.sweep import run_sweep as run_variants

    base = config_from_args(args)
    with output_folder(Path(base.out), worth_keeping=has_progress) as out:
        num_layers = find_backbone(load_pretrained(base.model, trust_remote_code=base.trust_remote_code,
                                                   model_class=encoder_class)[0]).num_layers
        variants = sweep_variants(num_layers, args.ks, args.lora, args.seeds, args.progressive)
        folders = run_variants(base, out, variants, args.executor)
        markdown = write_report([load_run(folder) for folder in folders], out, f"{base.task} on {base.model}: sweep")
    print(markdown, end="")
    print(f"wrote {out}/report.md, .html, .json and plots")


def run_report(args: argparse.Namespace) -> None:
    from telly.report import comparison_table, expand_run_folders, load_run, write_report
    from telly.run_folder import is_finished

    runs = [load_run(folder) for folder in expand_run_folders(args.runs)]
    out = args.out or (args.runs[0] if len(args.runs) == 1 and not is_finished(args.runs[0]) else None)
    if out is None:
        print(comparison_table(runs), end="")
        return
    with output_folder(out):
        print(write_report(runs, out, f"{runs[0].metrics.task}: {', '.join(run.name for run in runs)}"), end="")
    print(f"wrote {out}/report.md, .html, .json and plots")


def run_export(args: argparse.Namespace) -> None:
    from telly.run_folder import read_config
    from telly.use.export import export_run

    read_config(args.run)  # a finished run, checked before anything is written
    if args.out.is_dir() and any(args.out.iterdir()):
        raise UserError(f"export folder {args.out} is not empty; choose a new or empty --out")
    with output_folder(args.out) as out:
        written = export_run(args.run, out, adapter=args.adapter)
    print("\n".join(f"wrote {out}/{line}" for line in written))


def run_predict(args: argparse.Namespace) -> None:
    from telly.run_folder import read_config
    from telly.runtime import resolve_runtime
    from telly.use.predict import predict_to_file

    read_config(args.run)
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; name the prediction file to write")
    if not args.out.parent.is_dir():
        raise UserError(f"no such folder for --out: {args.out.parent}")
    metrics = predict_to_file(args.run, args.data, args.split, args.out, resolve_runtime(args.device, args.mixed_precision))
    print(f"wrote {args.out}; {args.split} metrics from it: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))


def run_search(args: argparse.Namespace) -> None:
    import json

    from telly.run_folder import read_config
    from telly.runtime import resolve_runtime
    from telly.use.search import search

    read_config(args.run)
    if not args.query.strip():
        raise UserError("the query is empty; say in words what the function does")
    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    sources, language = sources_and_language(args.sources, args.language)
    matches, update = search(args.run, args.query, sources, language, top=args.top, max_file_mb=args.max_file_mb,
                             index_folder=args.index, runtime=resolve_runtime(args.device, args.mixed_precision))
    print(f"{update.functions:,} functions in {update.files:,} files ({update.encoded:,} encoded now, the rest from "
          f"the index in {update.folder})", file=sys.stderr)
    if args.json:
        print(json.dumps([dataclasses.asdict(match) for match in matches], indent=2))
    else:
        print("\n".join(f"{match.score:.4f}  {match.file}:{match.line}  {match.function}" for match in matches))


def file_and_place(text: str, what: str) -> tuple[Path, str]:
    """FILE:LINE or FILE:FUNCTION split at the last colon."""
    file, _, place = text.rpartition(":")
    if not file or not place:
        raise UserError(f"expected FILE:{what}, got {text!r}")
    return Path(file), place


def run_complete(args: argparse.Namespace) -> None:
    from telly.run_folder import read_config
    from telly.runtime import resolve_runtime
    from telly.use.assist import complete_line

    file, line = file_and_place(args.place, "LINE")
    if not line.isdigit():
        raise UserError(f"expected FILE:LINE with a line number, got {args.place!r}")
    read_config(args.run)
    print(complete_line(args.run, file, int(line), resolve_runtime(args.device, args.mixed_precision)))


def run_summarize(args: argparse.Namespace) -> None:
    from telly.run_folder import read_config
    from telly.runtime import resolve_runtime
    from telly.use.assist import summarize_function

    file, function = file_and_place(args.place, "FUNCTION")
    read_config(args.run)
    print(summarize_function(args.run, file, function, args.language, resolve_runtime(args.device, args.mixed_precision)))


def main(argv: list[str] | None = None) -> int:
    args = argparse.Namespace()

    def run_command() -> None:
        build_parser().parse_args(argv, namespace=args)
        args.handler(args)

    return at_the_boundary(run_command, lambda: getattr(args, "after_interrupt", ""))


if __name__ == "__main__":
    sys.exit(main())
