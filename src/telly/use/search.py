"""`telly search RUN "query" --sources PATH...`: every function of a source tree, ranked for a query by a
code-search run's fine-tuned encoder.

The index lives in a folder (default `~/.cache/telly/search/<key of run, sources, language>`):
`vectors.safetensors` (one L2-normalised vector per function) and `index.json` (the model's
fingerprint, and per source file its sha256 and its functions: name, line, row of `vectors`),
replaced together in one step. It is reused while the run's weights and the files are unchanged;
a changed or new file is read and encoded alone, a vanished one dropped. A function is encoded as
the run's training read code: its code tokens (docstring left out) up to `--max-code-len`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from telly.data.corpus import FileReader, language_named, source_files
from telly.errors import UserError
from telly.files import atomic_path, file_sha256, read_json, write_json
from telly.run_folder import BEST_CHECKPOINT
from telly.runtime import Runtime
from telly.use.export import load_run

INDEX_FILE, VECTORS_FILE = "index.json", "vectors.safetensors"
INDEX_VERSION = 1


@dataclass(frozen=True)
class Match:
    file: str
    line: int
    function: str
    score: float


@dataclass(frozen=True)
class IndexUpdate:
    """What bringing the index up to date did."""

    files: int
    functions: int
    encoded: int  # functions read and encoded now (of new or changed files)
    folder: Path


def default_index_folder(run: Path, sources: list[Path], language: str, max_file_mb: float) -> Path:
    key = json.dumps([str(run.resolve()), sorted(str(source.resolve()) for source in sources), language, max_file_mb])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "telly" / "search"
    return cache / hashlib.sha256(key.encode()).hexdigest()[:32]


def search(run: Path, query: str, sources: list[Path], language: str, *, top: int, max_file_mb: float,
           index_folder: Path | None, runtime: Runtime) -> tuple[list[Match], IndexUpdate]:
    """The `top` functions of `sources` best matching `query`, best first, and what indexing did."""
    loaded = load_run(run, runtime)
    if loaded.config.task != "code-search":
        raise UserError(f"telly search needs a code-search run; {run} fine-tuned for {loaded.config.task}")
    folder = index_folder or default_index_folder(run, sources, language, max_file_mb)
    task, model = loaded.task, loaded.model

    def encode(texts: list[str], max_length: int, description: str) -> torch.Tensor:
        with torch.no_grad():
            return task.embed(model, texts, max_length, description)

    model_key = json.dumps({"weights": file_sha256(run / BEST_CHECKPOINT), "max_code_len": loaded.config.max_code_len,
                            "version": INDEX_VERSION})
    index, vectors, update = updated_index(folder, model_key, sources, language, max_file_mb,
                                           lambda texts: encode(texts, loaded.config.max_code_len, "indexing functions"))
    entries = [(location, function) for location, file in index["files"].items() for function in file["functions"]]
    if not entries:
        return [], update
    scores = vectors @ encode([query], loaded.config.max_nl_len, "query")[0]
    best = scores.argsort(descending=True, stable=True)[:top].tolist()
    rows = {function["row"]: (location, function) for location, function in entries}
    return [Match(rows[row][0], rows[row][1]["line"], rows[row][1]["name"], float(scores[row])) for row in best], update


def updated_index(folder: Path, model_key: str, sources: list[Path], language: str, max_file_mb: float,
                  encode) -> tuple[dict, torch.Tensor, IndexUpdate]:
    """The index of `sources` in `folder`, brought up to date (and rewritten when anything changed)."""
    old_index, old_vectors = read_index(folder, model_key)
    plugin = language_named(language)
    reader = FileReader(plugin.name, require_docstring=False, min_statements=0, max_file_mb=max_file_mb)
    files, kept_rows, texts = {}, [], []
    for source_file in source_files(sources, plugin.suffixes):
        if source_file.where in files:  # named twice among the sources
            continue
        digest = reader.digest(source_file)
        if digest is None:
            continue
        old = old_index["files"].get(source_file.where)
        if old is not None and old["sha256"] == digest:
            functions = [{**function, "row": len(kept_rows) + index} for index, function in enumerate(old["functions"])]
            kept_rows += [function["row"] for function in old["functions"]]
        else:
            found, _ = reader(source_file)
            functions = [{"name": function.func_name, "line": function.line, "new": len(texts) + index}
                         for index, function in enumerate(found)]
            texts += [" ".join(function.code_tokens) for function in found]
        files[source_file.where] = {"sha256": digest, "functions": functions}
    new_vectors = encode(texts) if texts else None
    for file in files.values():  # new functions follow the kept ones
        for function in file["functions"]:
            if "new" in function:
                function["row"] = len(kept_rows) + function.pop("new")
    parts = [old_vectors[kept_rows]] if kept_rows else []
    vectors = torch.cat(parts + ([new_vectors] if new_vectors is not None else [])) if parts or texts else torch.zeros(0)
    index = {"model": model_key, "files": files}
    if index != old_index:
        write_index(folder, index, vectors)
    update = IndexUpdate(len(files), sum(len(file["functions"]) for file in files.values()), len(texts), folder)
    return index, vectors, update


def read_index(folder: Path, model_key: str) -> tuple[dict, torch.Tensor | None]:
    """The stored index if it was made with this model and is readable; else an empty one."""
    empty = {"model": model_key, "files": {}}
    try:
        index = read_json(folder / INDEX_FILE)
        vectors = load_file(folder / VECTORS_FILE)["vectors"]
    except (OSError, UserError, SafetensorError, KeyError):
        return empty, None
    if not isinstance(index, dict) or index.get("model") != model_key or \
            sum(len(file["functions"]) for file in index["files"].values()) != len(vectors):
        return empty, None
    return index, vectors


def write_index(folder: Path, index: dict, vectors: torch.Tensor) -> None:
    try:
        with atomic_path(folder) as temporary:
            temporary.mkdir()
            save_file({"vectors": vectors.contiguous()}, temporary / VECTORS_FILE)
            write_json(temporary / INDEX_FILE, index)
    except OSError as error:
        raise UserError(f"cannot write the search index in {folder}: {error.strerror or error}") from None

