"""`telly export RUN --out DIR`: a finished run as folders that need no telly to load.

    DIR/
      config.json, model.safetensors, tokenizer files   the fine-tuned pre-trained model (LoRA merged), for
                                                         AutoModel, AutoModelForCausalLM or AutoModelForSeq2SeqLM
      modules.json, sentence_bert_config.json,          code search: a sentence-transformers model that pools
      1_Pooling/config.json                              and normalises as telly's evaluation did
      task_parts.safetensors, task_parts.json           the task's new parts (clone classifier, new decoder)
      adapter/                                          with --adapter, a LoRA run's adapters as a PEFT folder
      README.md                                         the model card (Hugging Face convention)
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from telly.config import FinetuneConfig, flag, flat_fields
from telly.errors import UserError
from telly.files import atomic_write_text, read_json, write_json
from telly.models.load import DEFAULT_MODEL
from telly.run_folder import CONFIG_FILE, RunMetrics, read_metrics
from telly.runtime import CPU, Runtime
from telly.study.representations import RunModels, run_models

TASK_PARTS = "task_parts"  # .safetensors and .json
ADAPTER_FOLDER = "adapter"
# The hub ids of the models telly ships offline: a model card names its base model by hub id.
HUB_IDS = {DEFAULT_MODEL: "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# The hub's pipeline tag of an exported folder, by the class that loads it (code search's: sentence-similarity).
PIPELINE_TAGS = {"AutoModelForSeq2SeqLM": "text2text-generation", "AutoModelForCausalLM": "text-generation"}
ST_POOLING_KEYS = {"mean": "pooling_mode_mean_tokens", "last": "pooling_mode_lasttoken"}


def load_run(run: str | Path, runtime: Runtime = CPU) -> RunModels:
    """A finished run's whole task model (`.model`: head, new decoder or LoRA adapters included), its
    fine-tuned pre-trained part (`.pretrained_part`), its tokenizer (`.task.tokenizer`) and config."""
    return run_models(Path(run), runtime=runtime)


def export_run(run: Path, out: Path, adapter: bool = False) -> list[str]:
    """Write the export of `run` into the folder `out`; return what was written, a line per item."""
    metrics = read_metrics(run)
    loaded = load_run(run)
    if adapter and loaded.config.method != "lora":
        raise UserError(f"--adapter exports LoRA adapters; {run} was trained with --method {loaded.config.method}")
    written = []
    pretrained = loaded.pretrained_part
    if loaded.config.method == "lora":
        if adapter:
            write_adapter(pretrained, base_model_id(loaded.config.model), out / ADAPTER_FOLDER)
            written.append(f"{ADAPTER_FOLDER}/: the LoRA adapters as a PEFT folder")
        merge_lora(pretrained)
    pretrained.save_pretrained(out)
    loaded.task.tokenizer.save_pretrained(out)
    written.append(f"config.json, model.safetensors, tokenizer: {standard_class(loaded)} loads them")
    if metrics.task == "code-search":
        write_sentence_transformers_files(out, loaded, metrics.pooling)
        written.append("modules.json, sentence_bert_config.json, 1_Pooling/: a sentence-transformers model")
    parts = new_parts(loaded.model, pretrained)
    if parts:
        write_task_parts(out, loaded, parts)
        written.append(f"{TASK_PARTS}.safetensors, {TASK_PARTS}.json: the task's new parts")
    atomic_write_text(out / "README.md", model_card(run, loaded, metrics, sorted({name.split(".")[0] for name in parts})))
    written.append("README.md: the model card")
    return written


def base_model_id(model: str) -> str:
    return HUB_IDS.get(model, model)


def standard_class(loaded: RunModels) -> str:
    """The transformers Auto class that loads the exported pre-trained part."""
    return loaded.task.pretrained_class(loaded.pretrained_part.config).__name__


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA adapter into the weight it adapts and put the plain layer back (PEFT's merge_and_unload
    for a model the adapters were injected into)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    del model.peft_config


def write_adapter(model: nn.Module, base_model: str, folder: Path) -> None:
    """The injected adapters as `PeftModel.from_pretrained(base, folder)` reads them."""
    from peft import get_peft_model_state_dict

    config = copy.deepcopy(model.peft_config["default"])
    config.base_model_name_or_path, config.inference_mode = base_model, True
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    weights = {f"base_model.model.{name}": tensor.detach().contiguous()
               for name, tensor in get_peft_model_state_dict(model).items()}
    save_file(weights, folder / "adapter_model.safetensors", metadata={"format": "pt"})


def write_sentence_transformers_files(out: Path, loaded: RunModels, pooling: str | None) -> None:
    """modules.json and the module configs: the Transformer is the folder itself, then the pooling
    metrics.json names, then L2 normalisation (code search's encoder normalises). Code is read up to
    the run's code length, as evaluation read it."""
    if pooling not in ST_POOLING_KEYS:
        raise UserError(f"cannot export a sentence-transformers model with pooling {pooling!r}")
    modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    write_json(out / "modules.json", [{"idx": index, "name": str(index), "path": path,
                                       "type": f"sentence_transformers.models.{kind}"}
                                      for index, (path, kind) in enumerate(modules)])
    write_json(out / "sentence_bert_config.json", {"max_seq_length": loaded.task.max_length(loaded.config.max_code_len),
                                                   "do_lower_case": False})
    (out / "1_Pooling").mkdir(exist_ok=True)
    modes = {key: key == ST_POOLING_KEYS[pooling] for key in ST_POOLING_KEYS.values()}
    write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": loaded.pretrained_part.config.hidden_size, "pooling_mode_cls_token": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False, **modes})


def new_parts(model: nn.Module, pretrained: nn.Module) -> dict[str, object]:
    """The task model's tensors that are not the pre-trained part's (a classifier, a new decoder), by
    their names in the task model; a tensor tied to a pre-trained one is left out."""
    pretrained_storage = {tensor.data_ptr() for tensor in pretrained.state_dict().values()}
    return {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()
            if tensor.data_ptr() not in pretrained_storage}


def write_task_parts(out: Path, loaded: RunModels, parts: dict) -> None:
    model, pretrained = loaded.model, loaded.pretrained_part
    prefix = next(name for name, module in model.named_modules() if module is pretrained)
    tied = {name: pretrained_name for name, tensor in model.state_dict().items() if name not in parts
            and not name.startswith(prefix + ".")
            for pretrained_name, same in pretrained.state_dict().items() if same.data_ptr() == tensor.data_ptr()}
    save_file(parts, out / f"{TASK_PARTS}.safetensors", metadata={"format": "pt"})
    write_json(out / f"{TASK_PARTS}.json", {
        "task": loaded.config.task,
        "task_model": type(model).__name__,
        "pretrained_part": prefix,
        "parts": {name: list(tensor.shape) for name, tensor in parts.items()},
        "tied_to_pretrained": tied,
        "config": dataclasses.asdict(loaded.config),
        "load_with": "telly.load_run(RUN) rebuilds the task model; these are its tensors outside the pre-trained part",
    })


def finetune_command(config: FinetuneConfig) -> str:
    """The `telly finetune` command line of `config`: the settings that differ from the defaults."""
    values = config.to_flat()
    words = ["telly", "finetune"]
    for name, _, option in flat_fields():
        value = values[name]
        default = option.default_factory() if option.default is dataclasses.MISSING else option.default
        if value == default and not option.metadata.get("required"):
            continue
        if isinstance(value, bool):
            words.append(flag(name, option))
        else:
            words += [flag(name, option), ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return " ".join(words)


def model_card(run: Path, loaded: RunModels, metrics: RunMetrics, new_parts: list[str]) -> str:
    """README.md: YAML metadata (base model, tags, task, metrics with values, data) and the text;
    `new_parts` name the task's parts saved beside the model (task_parts.safetensors)."""
    from huggingface_hub import EvalResult, ModelCardData

    config = loaded.config
    data_name = Path(config.data).name
    pipeline = "sentence-similarity" if config.task == "code-search" else \
        PIPELINE_TAGS.get(standard_class(loaded), "feature-extraction")  # an encoder (its new decoder beside)
    variant = "LoRA" if config.method == "lora" else "full fine-tuning" if metrics.freeze < 0 else f"Telly-{metrics.freeze}"
    card = ModelCardData(
        base_model=base_model_id(config.model), library_name="sentence-transformers" if config.task == "code-search"
        else "transformers", pipeline_tag=pipeline, datasets=[data_name], model_name=run.name,
        tags=["telly", "code", config.task, variant.lower().replace(" ", "-")],
        eval_results=[EvalResult(task_type=config.task, task_name=config.task, dataset_type=data_name,
                                 dataset_name=data_name, dataset_split="test", metric_type=name, metric_name=name,
                                 metric_value=value) for name, value in metrics.test.items()],
    )
    original = FinetuneConfig.from_dict(read_json(run / CONFIG_FILE))
    params = metrics.params
    if config.method == "lora":
        frozen = (f"every pre-trained weight frozen, LoRA adapters of rank {config.lora.rank} (alpha {config.lora.alpha}) "
                  "trained and merged into the weights")
        k = "- K: none (LoRA)"
    else:
        frozen = "nothing frozen" if metrics.freeze < 0 else \
            f"the embeddings and the bottom {metrics.freeze} of {metrics.num_layers} blocks frozen"
        k = f"- K = {metrics.freeze}" + (" (chosen by --freeze auto)" if metrics.freeze_auto else "") \
            + (" (-1: full fine-tuning)" if metrics.freeze < 0 else "")
    lines = [
        f"# {run.name}: {base_model_id(config.model)} fine-tuned for {config.task}", "",
        f"Fine-tuned with telly ({variant}: {frozen}).", "",
        k,
        f"- trainable parameters: {params['trainable']:,} of {params['total']:,} ({params['percent_trainable']:.1f}%)",
        f"- data: `{config.data}` ({', '.join(f'{split} {count:,}' for split, count in metrics.examples.items())} examples)",
        f"- test metrics: {', '.join(f'{name} {value:.4f}' for name, value in metrics.test.items())}",
        f"- best epoch {metrics.best_epoch}; seed {metrics.seed}", "",
        "Made with:", "", "```", finetune_command(original), "```", "",
        "## Use", "", f"`{standard_class(loaded)}.from_pretrained(this folder)` loads the fine-tuned model with its tokenizer.",
    ]
    if new_parts:
        lines += [f"The task's new parts ({', '.join(new_parts)}) are in {TASK_PARTS}.safetensors, described by "
                  f"{TASK_PARTS}.json; `telly.load_run(RUN)` gives the whole task model."]
    if config.task == "code-search":
        lines += ["`SentenceTransformer(this folder).encode(texts)` gives the vectors telly ranked with "
                  f"({metrics.pooling} pooling, L2-normalised)."]
    return f"---\n{card.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
