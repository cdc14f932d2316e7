"""`telly probe`: which code properties each layer of a model encodes.

The model reads every probe function (and every rewrite, for the semantic probe) once, as the
sequence of its code tokens split into sub-words; `layer_features` keeps each layer's mean-pooled
vector and the token vectors the lexical probe scores. Each property then trains probes on those
features (see `telly.study.probing`):
- lexical: the type of each code token, on its first sub-word (accuracy);
- syntactic: find the function's own SBT among all test functions' SBTs (MRR); an SBT is a TF-IDF
  vector of its 1-3-grams of node types (identifier and literal values left out, so matching takes
  structure, not shared names), reduced by truncated SVD fitted on the training functions;
- structural: cyclomatic complexity class 1..≥6 (accuracy);
- semantic: retrieve a function's rewrites among all test programs (MAP@R).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict

import numpy as np
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from telly.data.language import LEXICAL_TYPES
from telly.data.languages import LANGUAGES
from telly.study.probe_data import ProbeFunction, ProbeSet
from telly.study.probing import (
    Classification,
    GroupRetrieval,
    Matching,
    ProbeData,
    ProbeResult,
    probe_all_layers,
)
from telly.study.properties import COMPLEXITY_CLASSES, IGNORED_LABEL, PROPERTIES, align_to_subwords
from telly.study.representations import FeatureCache, StudyModel, layer_features, sequences_fingerprint, weights_fingerprint

SBT_NGRAMS = (1, 3)
SBT_DIMENSIONS = 128
LEXICAL_EPOCHS, SEQUENCE_EPOCHS = 5, 30


def probe_model(
    model: StudyModel,
    probe_set: ProbeSet,
    properties: tuple[str, ...] = PROPERTIES,
    max_length: int = 256,
    tokens_per_function: int = 20,
    seed: int = 0,
    cache: FeatureCache | None = None,
) -> dict[str, ProbeResult]:
    """Train and score every probe in `properties` on `model`; results by property."""
    inputs = _ProbeInputs(model, probe_set, max_length, tokens_per_function, seed)
    features = (cache or FeatureCache(None)).get(
        {
            "kind": "probe",
            "weights": weights_fingerprint(model.encoder),
            "inputs": sequences_fingerprint(inputs.sequences, inputs.positions),
        },
        lambda: layer_features(model, inputs.sequences, inputs.positions, description=f"{model.description} layers"),
    )
    builders = {
        "lexical": inputs.lexical,
        "syntactic": lambda f: inputs.syntactic(f, seed),
        "structural": inputs.structural,
        "semantic": inputs.semantic,
    }
    results = {}
    for name in properties:
        data, objective = builders[name](features)
        epochs = LEXICAL_EPOCHS if name == "lexical" else SEQUENCE_EPOCHS
        results[name] = probe_all_layers(data, objective, seed=seed, epochs=epochs, runtime=model.runtime,
                                         description=f"{name} probes")
    return results


class _ProbeInputs:
    """The model inputs of a probe set (functions first, train then test; then their rewrites) and each probe's data."""

    def __init__(self, model: StudyModel, probe_set: ProbeSet, max_length: int, tokens_per_function: int, seed: int):
        self.functions: list[ProbeFunction] = probe_set.train + probe_set.test
        self.num_train = len(probe_set.train)
        pad_id = model.tokenizer.pad_token_id
        self.sequences, self.positions, self.labels = [], [], []
        for index, function in enumerate(self.functions):
            ids, labels = align_to_subwords(list(function.typed_tokens), model.tokenizer, max_length)
            ids, labels = _without_padding(ids, labels, pad_id)
            labelled = [position for position, label in enumerate(labels) if label != IGNORED_LABEL]
            chosen = sorted(random.Random(f"{seed}:{index}").sample(labelled, min(tokens_per_function, len(labelled))))
            self.sequences.append(ids)
            self.positions.append(chosen)
            self.labels.append([labels[position] for position in chosen])
        language = LANGUAGES[probe_set.language]
        for function in self.functions:
            for rewrite in function.rewrites:
                ids, labels = align_to_subwords(language.lexical_types(rewrite), model.tokenizer, max_length)
                self.sequences.append(_without_padding(ids, labels, pad_id)[0])
                self.positions.append([])

    def _split(self, values: torch.Tensor, targets: torch.Tensor, train_items: int) -> ProbeData:
        return ProbeData(values[:train_items], targets[:train_items], values[train_items:], targets[train_items:])

    def _function_features(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return features["pooled"][: len(self.functions)]

    def lexical(self, features):
        targets = torch.tensor([label for labels in self.labels for label in labels])
        train_tokens = sum(len(labels) for labels in self.labels[: self.num_train])
        return self._split(features["tokens"], targets, train_tokens), Classification(len(LEXICAL_TYPES), batch_size=512)

    def structural(self, features):
        targets = torch.tensor([function.complexity_class - 1 for function in self.functions])
        return self._split(self._function_features(features), targets, self.num_train), Classification(COMPLEXITY_CLASSES)

    def syntactic(self, features, seed: int):
        vectors = sbt_vectors([function.sbt for function in self.functions], self.num_train, seed)
        return self._split(self._function_features(features), vectors, self.num_train), Matching(vectors.size(1))

    def semantic(self, features):
        rewrites = len(self.functions[0].rewrites)
        count = len(self.functions)
        # Function i and its rewrites (sequences count + i * rewrites + r) form group i.
        groups = [[i, *(count + i * rewrites + r for r in range(rewrites))] for i in range(count)]
        order = [index for group in groups for index in group]
        targets = torch.tensor([i for i, group in enumerate(groups) for _ in group])
        return (
            self._split(features["pooled"][order], targets, self.num_train * (1 + rewrites)),
            GroupRetrieval(),
        )


def _without_padding(ids: list[int], labels: list[int], pad_id: int | None) -> tuple[list[int], list[int]]:
    length = len(ids)
    while pad_id is not None and length and ids[length - 1] == pad_id:
        length -= 1
    return ids[:length], labels[:length]


def sbt_vectors(sbts: list[tuple[str, ...]], num_train: int, seed: int) -> torch.Tensor:
    """Unit vectors of the SBTs (train first): TF-IDF of node-type n-grams, truncated SVD fitted on train."""
    documents = [[_node_type(token) for token in sbt] for sbt in sbts]
    vectorizer = TfidfVectorizer(analyzer=_ngrams, sublinear_tf=True)
    train_matrix = vectorizer.fit_transform(documents[:num_train])
    dimensions = min(SBT_DIMENSIONS, train_matrix.shape[1] - 1, num_train - 1)
    svd = TruncatedSVD(dimensions, random_state=seed).fit(train_matrix)
    vectors = torch.from_numpy(svd.transform(vectorizer.transform(documents))).float()
    return torch.nn.functional.normalize(vectors, dim=-1)


def _node_type(token: str) -> str:
    """`Name_x` → `Name`, `arg_self` → `arg`; `Constant_str` keeps its type, brackets stay."""
    kind, _, value = token.partition("_")
    return token if kind == "Constant" else kind


def _ngrams(tokens: list[str]) -> list[str]:
    low, high = SBT_NGRAMS
    return [" ".join(tokens[i : i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]


def probe_report(model: StudyModel, model_name: str, probe_set: ProbeSet, results: dict[str, ProbeResult], seconds: float) -> dict:
    return {
        "model": model_name,
        "representations": model.description,
        "functions": {"train": len(probe_set.train), "test": len(probe_set.test)},
        "functions_left_out": probe_set.left_out,
        "seconds": round(seconds, 1),
        "properties": {name: asdict(result) for name, result in results.items()},
    }


def probe_markdown(report: dict) -> str:
    properties = report["properties"]
    names = list(properties)
    num_layers = len(next(iter(properties.values()))["layers"])
    header = "| layer | " + " | ".join(f"{name} ({properties[name]['metric']})" for name in names) + " |"
    lines = [
        f"# Probing {report['model']} ({report['representations']})",
        "",
        f"{report['functions']['train']:,} training and {report['functions']['test']:,} test functions; "
        f"layer 0 is the embedding output. Scores of a probe per layer, then of the weighted-layer probe.",
        "",
        header,
        "|---" * (len(names) + 1) + "|",
    ]
    for layer in range(num_layers):
        cells = []
        for name in names:
            scores = properties[name]["layers"]
            best = int(np.argmax(scores))
            cells.append(f"**{scores[layer]:.4f}**" if layer == best else f"{scores[layer]:.4f}")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines.append("| weighted | " + " | ".join(f"{properties[name]['weighted']:.4f}" for name in names) + " |")
    lines.append("| no-skill baseline | " + " | ".join(f"{properties[name]['baseline']:.4f}" for name in names) + " |")
    lines += ["", "Learned layer weights of the weighted-layer probe (softmax, sum to 1):", "", header,
              "|---" * (len(names) + 1) + "|"]
    for layer in range(num_layers):
        lines.append(f"| {layer} | " + " | ".join(f"{properties[name]['weights'][layer]:.3f}" for name in names) + " |")
    return "\n".join(lines) + "\n"


def run_probe_study(model: StudyModel, model_name: str, probe_set: ProbeSet, properties, **options) -> dict:
    started = time.perf_counter()
    results = probe_model(model, probe_set, properties, **options)
    return probe_report(model, model_name, probe_set, results, time.perf_counter() - started)
