"""`telly probe`: which code properties each layer of a model encodes.

The model reads each input once, with every hidden state; `layer_features` keeps each layer's
mean-pooled vector (and, for the probe functions, the token vectors the lexical probe scores).
Which inputs it reads depends on the properties asked for: the probe functions (as the sequence
of their code tokens split into sub-words), their rewrites, their SBTs as text, POJ-104's
programs. Each property then trains probes on those features (see `telly.study.probing`):
- lexical: the type of each code token, read on its last sub-word (the paper's choice) or its
  first (`lexical_subword`) (accuracy);
- syntactic: as Shi et al.: the same model also reads the function's SBT as text, node types
  only (identifier and literal values left out, so matching takes structure, not shared names);
  one linear map for the code's vectors and one for the SBT's, trained contrastively; MRR of
  finding the function's own SBT among all test SBTs;
- syntactic-ngrams: the same matching against a fixed space instead: TF-IDF of the SBT's node-type
  1-3-grams, reduced by truncated SVD fitted on the training functions (MRR);
- structural: cyclomatic complexity class 1..≥6 (accuracy);
- semantic: POJ-104: retrieve programs that solve the same problem, trained on train problems and
  scored on unseen test problems (MAP@R), when the user has POJ-104;
- invariance: retrieve a function's own rewrites (renamed, laid out anew, ...) among all test
  programs (MAP@R): invariance to renaming and layout, not semantics (a rewrite keeps the
  function's called names, attributes and literals).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from telly.data.language import LEXICAL_TYPES
from telly.data.languages import LANGUAGES
from telly.data.poj104 import Poj104Sample
from telly.study.probe_data import ProbeSet
from telly.study.probing import (
    WEIGHT_SEEDS,
    Classification,
    GroupRetrieval,
    Matching,
    PairMatching,
    ProbeData,
    ProbeResult,
    probe_all_layers,
)
from telly.study.properties import COMPLEXITY_CLASSES, IGNORED_LABEL, align_to_subwords, properties_to_probe
from telly.study.representations import FeatureCache, StudyModel, layer_features, sequences_fingerprint, weights_fingerprint
from telly.study.uncertainty import CONFIDENCE, DEFAULT_RESAMPLES

SBT_NGRAMS = (1, 3)
SBT_DIMENSIONS = 128
LEXICAL_EPOCHS, SEQUENCE_EPOCHS = 5, 30


@dataclass(frozen=True)
class ProbeOptions:
    max_length: int = 256  # sub-words the model reads of each input
    tokens_per_function: int = 20  # code tokens the lexical probe samples per function
    lexical_subword: str = "last"  # one of properties.SUBWORDS
    seed: int = 0
    resamples: int = DEFAULT_RESAMPLES  # bootstrap resamples of the test items
    weight_seeds: int = WEIGHT_SEEDS  # seeds of the weighted-layer probe


def probe_model(
    model: StudyModel,
    probe_set: ProbeSet,
    properties: tuple[str, ...] | None = None,
    options: ProbeOptions = ProbeOptions(),
    cache: FeatureCache | None = None,
    poj104: Poj104Sample | None = None,
) -> dict[str, ProbeResult]:
    """Train and score every probe in `properties` (default: all the inputs allow) on `model`; results by property.

    "semantic" needs `poj104`; the other properties read `probe_set`.
    """
    properties = properties or properties_to_probe("all", poj104 is not None)
    inputs = _ProbeInputs(model, probe_set, poj104, options, cache or FeatureCache(None))
    builders = {
        "lexical": inputs.lexical,
        "syntactic": inputs.syntactic,
        "syntactic-ngrams": inputs.syntactic_ngrams,
        "structural": inputs.structural,
        "semantic": inputs.semantic,
        "invariance": inputs.invariance,
    }
    results = {}
    for name in properties:
        data, objective = builders[name]()
        epochs = LEXICAL_EPOCHS if name == "lexical" else SEQUENCE_EPOCHS
        results[name] = probe_all_layers(data, objective, seed=options.seed, epochs=epochs, runtime=model.runtime,
                                         weight_seeds=options.weight_seeds, resamples=options.resamples,
                                         description=f"{name} probes")
    return results


class _ProbeInputs:
    """What the model reads for each probe (each input set read once, when first needed), and each probe's data.

    Input sets: "functions" (train then test, as code tokens), "rewrites" (each function's, in
    function order), "sbt" (each function's SBT as text), "programs" (POJ-104, train then test).
    """

    def __init__(self, model: StudyModel, probe_set: ProbeSet, poj104: Poj104Sample | None, options: ProbeOptions,
                 cache: FeatureCache):
        self.model, self.probe_set, self.poj104, self.options, self.cache = model, probe_set, poj104, options, cache
        self.functions = probe_set.train + probe_set.test
        self.num_train = len(probe_set.train)
        self._features: dict[str, dict[str, torch.Tensor]] = {}

    def features(self, input_set: str) -> dict[str, torch.Tensor]:
        if input_set not in self._features:
            sequences, positions = self._sequences(input_set)
            self._features[input_set] = self.cache.get(
                {"kind": "probe", "weights": self._weights, "inputs": sequences_fingerprint(sequences, positions)},
                lambda: layer_features(self.model, sequences, positions, description=f"{self.model.description}: {input_set}"),
            )
        return self._features[input_set]

    @cached_property
    def _weights(self) -> str:
        return weights_fingerprint(self.model.encoder)

    def _sequences(self, input_set: str) -> tuple[list[list[int]], list[list[int]] | None]:
        if input_set == "functions":
            return self._code_tokens.sequences, self._code_tokens.positions
        if input_set == "rewrites":
            language = LANGUAGES[self.probe_set.language]
            return [self._code_words(language.lexical_types(rewrite))[0]
                    for function in self.functions for rewrite in function.rewrites], None
        if input_set == "sbt":
            return self._text_ids([sbt_text(function.sbt) for function in self.functions]), None
        if input_set == "programs":  # POJ-104's C/C++ programs, whitespace collapsed as CodeXGLUE's reader does
            return self._text_ids([" ".join(program.code.split()) for program in self.poj104.train + self.poj104.test]), None
        raise ValueError(f"unknown input set {input_set!r}")

    def _code_words(self, typed_tokens) -> tuple[list[int], list[int]]:
        """Token ids (no padding) of code read as its code tokens, and the lexical label of each position."""
        ids, labels = align_to_subwords(list(typed_tokens), self.model.tokenizer, self.options.max_length,
                                        self.options.lexical_subword)
        pad_id = self.model.tokenizer.pad_token_id
        length = len(ids)
        while pad_id is not None and length and ids[length - 1] == pad_id:
            length -= 1
        return ids[:length], labels[:length]

    def _text_ids(self, texts: list[str]) -> list[list[int]]:
        return self.model.tokenizer(texts, truncation=True, max_length=self.options.max_length)["input_ids"]

    @cached_property
    def _code_tokens(self) -> "_CodeTokens":
        """The functions' token ids, and the positions (with labels) the lexical probe samples."""
        code_tokens = _CodeTokens([], [], [])
        for index, function in enumerate(self.functions):
            ids, labels = self._code_words(function.typed_tokens)
            labelled = [position for position, label in enumerate(labels) if label != IGNORED_LABEL]
            sample_size = min(self.options.tokens_per_function, len(labelled))
            chosen = sorted(random.Random(f"{self.options.seed}:{index}").sample(labelled, sample_size))
            code_tokens.sequences.append(ids)
            code_tokens.positions.append(chosen)
            code_tokens.labels.append([labels[position] for position in chosen])
        return code_tokens

    def _function_vectors(self) -> torch.Tensor:
        return self.features("functions")["pooled"]

    def _split(self, values: torch.Tensor, targets: torch.Tensor, train_items: int, clusters=None) -> ProbeData:
        test_clusters = None if clusters is None else clusters[train_items:]
        return ProbeData(values[:train_items], targets[:train_items], values[train_items:], targets[train_items:],
                         test_clusters)

    def lexical(self):
        labels = self._code_tokens.labels
        targets = torch.tensor([label for function_labels in labels for label in function_labels])
        functions = torch.tensor([index for index, function_labels in enumerate(labels) for _ in function_labels])
        train_tokens = sum(len(function_labels) for function_labels in labels[: self.num_train])
        data = self._split(self.features("functions")["tokens"], targets, train_tokens, clusters=functions)
        return data, Classification(len(LEXICAL_TYPES), batch_size=512)

    def structural(self):
        targets = torch.tensor([function.complexity_class - 1 for function in self.functions])
        return self._split(self._function_vectors(), targets, self.num_train), Classification(COMPLEXITY_CLASSES)

    def syntactic(self):
        pairs = torch.stack([self._function_vectors(), self.features("sbt")["pooled"]], dim=2)  # (N, L+1, 2, D)
        return self._split(pairs, torch.arange(len(self.functions)), self.num_train), PairMatching()

    def syntactic_ngrams(self):
        vectors = sbt_vectors([function.sbt for function in self.functions], self.num_train, self.options.seed)
        return self._split(self._function_vectors(), vectors, self.num_train), Matching(vectors.size(1))

    def invariance(self):
        rewrites = len(self.functions[0].rewrites)
        count = len(self.functions)
        vectors = torch.cat([self._function_vectors(), self.features("rewrites")["pooled"]])
        # Function i and its rewrites (rows count + i * rewrites + r) form group i.
        groups = [[i, *(count + i * rewrites + r for r in range(rewrites))] for i in range(count)]
        order = [index for group in groups for index in group]
        targets = torch.tensor([i for i, group in enumerate(groups) for _ in group])
        return self._split(vectors[order], targets, self.num_train * (1 + rewrites)), GroupRetrieval()

    def semantic(self):
        programs = self.poj104.train + self.poj104.test
        problem_ids = {problem: index for index, problem in enumerate(sorted({p.problem for p in programs}))}
        targets = torch.tensor([problem_ids[program.problem] for program in programs])
        return self._split(self.features("programs")["pooled"], targets, len(self.poj104.train)), GroupRetrieval()


@dataclass
class _CodeTokens:
    sequences: list[list[int]]
    positions: list[list[int]]
    labels: list[list[int]]


def sbt_text(sbt: tuple[str, ...]) -> str:
    """The SBT as the text the model reads: node types only, lowercased as the paper's scripts do."""
    return " ".join(_node_type(token) for token in sbt).lower()


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
    """`Name_x` → `Name`, `arg_self` → `arg`, `Identifier_x` → `Identifier`; `Constant_str` keeps its type, brackets stay."""
    kind, _, value = token.partition("_")
    return token if kind == "Constant" else kind


def _ngrams(tokens: list[str]) -> list[str]:
    low, high = SBT_NGRAMS
    return [" ".join(tokens[i : i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]


def protocol(options: ProbeOptions, poj104: Poj104Sample | None) -> dict[str, str]:
    """What each property's probe reads and scores, in words (for the report)."""
    described = {
        "lexical": f"type of each code token ({', '.join(LEXICAL_TYPES).lower()}), read on its {options.lexical_subword} "
                   "sub-word; accuracy",
        "syntactic": "the model also reads each function's SBT as text (node types only, no identifier or literal "
                     "values); a linear map per side, contrastive; MRR of finding the function's own SBT among all "
                     "test SBTs",
        "syntactic-ngrams": "a linear map into a fixed space of the SBTs (TF-IDF of node-type 1-3-grams, SVD); MRR of "
                            "finding the function's own SBT among all test SBTs",
        "structural": "cyclomatic complexity class 1..5, >=6; accuracy",
        "invariance": "a function and its rewrites (renamed, laid out anew, ...) form a group: invariance to renaming "
                      "and layout, not semantics; MAP@R over all test programs",
    }
    if poj104 is not None:
        described["semantic"] = (f"POJ-104: programs of {poj104.problems['train']} train problems train the probe, "
                                 f"programs of {poj104.problems['test']} unseen test problems score it; MAP@R")
    return described


def probe_report(model: StudyModel, model_name: str, probe_set: ProbeSet, results: dict[str, ProbeResult],
                 seconds: float, options: ProbeOptions = ProbeOptions(), poj104: Poj104Sample | None = None) -> dict:
    described = protocol(options, poj104)
    return {
        "model": model_name,
        "representations": model.description,
        "functions": {"train": len(probe_set.train), "test": len(probe_set.test)},
        "functions_left_out": probe_set.left_out,
        "poj104_programs": None if poj104 is None else {"train": len(poj104.train), "test": len(poj104.test)},
        "lexical_subword": options.lexical_subword,
        "confidence": CONFIDENCE,
        "bootstrap_resamples": options.resamples,
        "seconds": round(seconds, 1),
        "protocol": {name: described[name] for name in results},
        "properties": {name: asdict(result) for name, result in results.items()},
    }


def probe_markdown(report: dict) -> str:
    properties = report["properties"]
    names = list(properties)
    num_layers = len(next(iter(properties.values()))["layers"])
    header = "| layer | " + " | ".join(f"{name} ({properties[name]['metric']})" for name in names) + " |"
    rule = "|---" * (len(names) + 1) + "|"
    percent = round(100 * report["confidence"])
    programs = report["poj104_programs"]
    lines = [
        f"# Probing {report['model']} ({report['representations']})",
        "",
        f"{report['functions']['train']:,} training and {report['functions']['test']:,} test functions"
        + (f"; POJ-104: {programs['train']:,} training and {programs['test']:,} test programs" if programs else "")
        + ". Layer 0 is the embedding output.",
        "",
        *(f"- {name}: {text}" for name, text in report["protocol"].items()),
        "",
        f"Scores of a probe per layer, then of the weighted-layer probe, with {percent}% bootstrap intervals over "
        f"the test items ({report['bootstrap_resamples']:,} resamples; the lexical probe resamples whole functions). "
        "**Bold**: the best layer; *italic*: a layer whose interval overlaps the best layer's (not told apart from it).",
        "",
        header,
        rule,
    ]
    for layer in range(num_layers):
        cells = []
        for name in names:
            result = properties[name]
            cell = _with_interval(result["layers"][layer], result["layer_intervals"][layer])
            cells.append(_emphasis(layer, result["layers"], result["layer_intervals"]).format(cell))
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines.append("| weighted | " + " | ".join(
        _with_interval(properties[name]["weighted"], properties[name]["weighted_interval"]) for name in names) + " |")
    lines.append("| no-skill baseline | " + " | ".join(f"{properties[name]['baseline']:.4f}" for name in names) + " |")
    seeds = len(next(iter(properties.values()))["weights_by_seed"])
    lines += ["", f"Learned layer weights of the weighted-layer probe (softmax, sum to 1): mean over {seeds} seeds "
              "(lowest–highest):", "", header, rule]
    for layer in range(num_layers):
        cells = []
        for name in names:
            per_seed = [weights[layer] for weights in properties[name]["weights_by_seed"]]
            cells.append(f"{np.mean(per_seed):.3f} ({min(per_seed):.3f}–{max(per_seed):.3f})")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _with_interval(value: float, interval: list[float]) -> str:
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def _emphasis(layer: int, scores: list[float], intervals: list[list[float]]) -> str:
    """A format for the layer's cell: bold for the best layer, italic where its interval overlaps the best's."""
    best = int(np.argmax(scores))
    if layer == best:
        return "**{}**"
    low, high = intervals[layer]
    best_low, best_high = intervals[best]
    return "*{}*" if low <= best_high and best_low <= high else "{}"


def run_probe_study(model: StudyModel, model_name: str, probe_set: ProbeSet, properties, options: ProbeOptions,
                    cache: FeatureCache | None = None, poj104: Poj104Sample | None = None) -> dict:
    started = time.perf_counter()
    results = probe_model(model, probe_set, properties, options, cache, poj104)
    return probe_report(model, model_name, probe_set, results, time.perf_counter() - started, options, poj104)
