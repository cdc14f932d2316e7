"""The properties the probes study (`PROPERTIES`), and the labels a probe trains on.

Each language plug-in gives a function's lexical token types, SBT and cyclomatic complexity
(`telly.data.language.Language`; Python's in `telly.data.python_properties`). Here they become
labels: a lexical type per sub-word of the model (`align_to_subwords`) and a complexity class
(`complexity_class`). Light to import: the CLI reads `PROPERTIES` for its options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telly.data.language import LEXICAL_TYPES

if TYPE_CHECKING:  # transformers is slow to import, and only annotations name it here
    from transformers import PreTrainedTokenizerBase

# The properties `telly probe` probes, after Shi et al. (ISSTA 2023).
PROPERTIES = ("lexical", "syntactic", "structural", "semantic")

IGNORED_LABEL = -100  # the label PyTorch's cross-entropy skips

COMPLEXITY_CLASSES = 6  # classes 1..5, and 6 for a complexity of 6 or more


def align_to_subwords(
    code_tokens_with_types: list[tuple[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
) -> tuple[list[int], list[int]]:
    """The model's `input_ids` for the code tokens and one lexical label per position.

    The source tokens are tokenized as pre-split words (`is_split_into_words=True`; needs a fast
    tokenizer for `word_ids()`), each after a space, truncated and padded to `max_length`: the ids of
    the space-joined tokens, as the tasks read CodeSearchNet's code tokens (a byte-level BPE would
    otherwise read them glued together, "returnx"; a WordPiece splits on the space anyway). The FIRST sub-word of each
    source token is labelled with the index of its type in LEXICAL_TYPES; special tokens,
    continuation sub-words and padding get IGNORED_LABEL (-100). A source token cut off by
    truncation, or one the tokenizer turns into no sub-word at all, gets no label.
    """
    if not tokenizer.is_fast:
        raise ValueError("align_to_subwords needs a fast tokenizer (for word_ids)")
    words = [text if index == 0 else " " + text for index, (text, _) in enumerate(code_tokens_with_types)]
    encoding = tokenizer(
        words,
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding="max_length",
    )
    labels = []
    previous_word = None
    for word in encoding.word_ids():
        if word is None or word == previous_word:
            labels.append(IGNORED_LABEL)
        else:
            labels.append(LEXICAL_TYPES.index(code_tokens_with_types[word][1]))
        previous_word = word
    return list(encoding["input_ids"]), labels


def complexity_class(value: int) -> int:
    """The structural probe's class of a complexity: 1..5 as is, 6 for anything of 6 or more."""
    if value < 1:
        raise ValueError(f"cyclomatic complexity is at least 1, got {value}")
    return min(value, COMPLEXITY_CLASSES)
