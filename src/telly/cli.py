"""The `telly` command. A user mistake ends in one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path

from telly.config import FinetuneConfig
from telly.errors import UserError

USER_ERROR_EXIT = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message} (see '{self.prog} --help')")


def add_config_options(parser: argparse.ArgumentParser, config_class) -> None:
    """One option per dataclass field: `max_code_len: int` → `--max-code-len INT`."""
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        if isinstance(kind, types.UnionType):  # `int | None`
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        help_text = field.metadata["help"]
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            default = "" if field.metadata.get("required") else f" (default: {field.default})"
            parser.add_argument(
                flag, type=kind, default=field.default, required=field.metadata.get("required", False),
                metavar=kind.__name__.upper(), help=help_text + default,
            )


def add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="*", type=Path, help="source folders or files (default: this Python's standard library)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split by file (default: 0)")
    parser.set_defaults(run=run_data_build)


def build_parser() -> Parser:
    parser = Parser(prog="telly", description="Study and efficiently fine-tune pre-trained code models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    data = commands.add_parser("data", help="build datasets from real source code")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    build = data_commands.add_parser("build", help="a task's train/valid/test files from Python source")
    add_build_options(build)
    build.add_argument("--task", default="code-search", help="the task to build for (default: code-search): "
                       "CodeSearchNet for code-search/code-summarization, BigCloneBench for clone-detection, "
                       "CONCODE for code-generation, CodeXGLUE line-level for code-completion")
    clones = data_commands.add_parser("clones", help="BigCloneBench-format clone pairs (= build --task clone-detection)")
    add_build_options(clones)
    clones.set_defaults(task="clone-detection")

    finetune = commands.add_parser("finetune", help="fine-tune a model on a task (Telly-K with --freeze K)")
    add_config_options(finetune, FinetuneConfig)
    finetune.set_defaults(run=run_finetune)

    report = commands.add_parser("report", help="compare finished runs side by side")
    report.add_argument("runs", nargs="+", type=Path, help="run folders")
    report.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    report.set_defaults(run=run_report)
    return parser


def run_data_build(args: argparse.Namespace) -> None:
    from telly.data import BUILDERS, default_sources

    if args.task not in BUILDERS:
        raise UserError(f"unknown task {args.task!r}; choose one of: {', '.join(BUILDERS)}")
    summary = BUILDERS[args.task](args.sources or default_sources(), args.out, seed=args.seed)
    print(summary)
    print(f"wrote {args.task} data to {args.out}")


def run_finetune(args: argparse.Namespace) -> None:
    from telly.train import finetune

    options = {field.name: getattr(args, field.name) for field in dataclasses.fields(FinetuneConfig)}
    metrics = finetune(FinetuneConfig(**options))
    print(f"wrote {args.out}/metrics.json; test {metrics['selection_metric']} {metrics['test'][metrics['selection_metric']]:.4f}")


def run_report(args: argparse.Namespace) -> None:
    from telly.files import atomic_write_text
    from telly.report import comparison_table, load_run

    table = comparison_table([load_run(folder) for folder in args.runs])
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
    except UserError as error:
        print(f"telly: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print("telly: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
