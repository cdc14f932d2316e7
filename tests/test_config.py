"""FinetuneConfig: frozen, grouped like PEFT's configs, read back from config.json (old flat ones too)."""

import dataclasses
import json

import pytest

from telly.cli import build_parser, config_from_args
from telly.config import (
    FULL_FINETUNING, AutoFreezeOptions, CacheOptions, FinetuneConfig, LoraOptions, ProgressiveOptions, TimeBudgetOptions,
    flag, flat_fields,
)
from telly.errors import UserError

REQUIRED = {"task": "code-search", "data": "d", "out": "o"}


def test_a_config_is_frozen_and_replaced_not_changed():
    config = FinetuneConfig(**REQUIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.freeze = 3
    assert dataclasses.replace(config, freeze=3).freeze == 3 and config.freeze == FULL_FINETUNING


def test_the_command_line_flags_come_from_the_groups():
    flags = {name: flag(name, field) for name, _, field in flat_fields()}
    assert (flags["lora_rank"], flags["auto_freeze_measure"], flags["cache_memory_mb"]) == \
        ("--lora-rank", "--auto-freeze-measure", "--cache-memory-mb")
    # Fields that name their own flag keep the options users know.
    assert (flags["cache_enabled"], flags["time_budget_seconds"], flags["time_budget_marks"]) == \
        ("--no-cache", "--time-budget", "--time-marks")


def test_options_parse_into_their_groups():
    args = build_parser().parse_args(["finetune", "--task", "code-search", "--data", "d", "--out", "o", "--freeze", "auto",
                                      "--lora-rank", "4", "--no-cache", "--time-budget", "60", "--auto-freeze-inputs", "9"])
    config = config_from_args(args)
    assert config.freeze == "auto"
    assert config.lora == LoraOptions(rank=4)
    assert config.cache == CacheOptions(enabled=False)
    assert config.time_budget == TimeBudgetOptions(seconds=60.0) and config.time_budget.enabled
    assert config.auto_freeze == AutoFreezeOptions(inputs=9)


def test_config_json_reads_back_the_same_config(tmp_path):
    config = FinetuneConfig(**REQUIRED, freeze=2, lora=LoraOptions(targets="query,key"),
                            time_budget=TimeBudgetOptions(seconds=5.0, marks=2))
    saved = json.loads(json.dumps(dataclasses.asdict(config)))
    assert saved["lora"] == {"rank": 8, "alpha": 16, "targets": "query,key"}  # nested, as PEFT writes its configs
    assert FinetuneConfig.from_dict(saved) == config
    assert config.lora.target_modules == ("query", "key")


def test_a_flat_config_json_of_an_older_run_still_reads():
    old = {**REQUIRED, "freeze": 1, "lora_rank": 4, "no_cache": True, "time_budget": 10.0, "time_marks": 2,
           "cache_memory_mb": 7, "auto_freeze_threshold": 0.5, "model_path": "/somewhere"}
    config = FinetuneConfig.from_dict(old)
    assert (config.lora.rank, config.cache, config.time_budget, config.auto_freeze.threshold) == \
        (4, CacheOptions(enabled=False, memory_mb=7), TimeBudgetOptions(seconds=10.0, marks=2), 0.5)


@pytest.mark.parametrize("make, message", [
    (lambda: FinetuneConfig(**REQUIRED, freeze="3"), "--freeze: expected an integer K, 'auto' or 'progressive', got '3'"),
    (lambda: LoraOptions(rank=0), "--lora-rank must be > 0, got 0"),
    (lambda: AutoFreezeOptions(measure="cosine"), "--auto-freeze-measure must be one of rsa, cka, got 'cosine'"),
    (lambda: CacheOptions(device_mb=-1), "--cache-device-mb must be >= 0, got -1"),
    (lambda: TimeBudgetOptions(marks=0), "--time-marks must be > 0, got 0"),
    (lambda: ProgressiveOptions(percentile=0), "--progressive-percentile must be in (0, 100], got 0"),
    (lambda: ProgressiveOptions(percentile=100.5), "--progressive-percentile must be in (0, 100], got 100.5"),
    (lambda: FinetuneConfig(**REQUIRED, method="lora", freeze=2), "--freeze and --freeze-decoder belong to --method telly"),
])
def test_each_group_checks_its_own_values_with_the_flag_names(make, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_recommend_and_sweep_offer_only_the_options_they_use():
    def flags_of(command):
        subparser = build_parser()._subparsers._group_actions[0].choices[command]
        return {option for action in subparser._actions for option in action.option_strings}

    recommend, sweep, finetune = flags_of("recommend"), flags_of("sweep"), flags_of("finetune")
    assert not {"--resume", "--overwrite", "--method", "--time-budget", "--freeze", "--lora-rank"} & recommend
    assert {"--auto-freeze-threshold", "--device"} <= recommend
    assert not {"--freeze", "--method", "--auto-freeze-threshold"} & sweep and "--lora-rank" in sweep
    assert {"--freeze", "--no-cache", "--time-marks", "--cache-device-mb"} <= finetune


def test_help_says_what_each_option_takes_and_its_default_once():
    def help_of(command, option):
        subparser = build_parser()._subparsers._group_actions[0].choices[command]
        return next(action for action in subparser._actions if option in action.option_strings)

    assert help_of("finetune", "--freeze").metavar == "K|auto|progressive"
    assert help_of("finetune", "--lora-targets").help.count("(default:") == 1
    assert help_of("finetune", "--lr").help.endswith("(default: 2e-05)")
    assert help_of("finetune", "--out").help.startswith("run folder")
    assert help_of("sweep", "--out").help.startswith("sweep folder to write: a run folder per variant")
    assert help_of("recommend", "--out").help.startswith("folder to write recommendation.json")
