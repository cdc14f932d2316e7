"""The properties the probes study (`PROPERTIES`), and the labels a probe trains on.

Each language plug-in gives a function's lexical token types, SBT and cyclomatic complexity
(`telly.data.language.Language`; Python's in `telly.data.python_properties`). Here they become
labels: a lexical type per sub-word of the model (`align_to_subwords`) and a complexity class
(`complexity_class`). Light to import: the CLI reads `PROPERTIES` and `SUBWORDS` for its options.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from telly.data.language import LEXICAL_TYPES
from telly.errors import UserError

if TYPE_CHECKING:  # transformers is slow to import, and only annotations name it here
    from transformers import PreTrainedTokenizerBase

# The properties `telly probe` probes, after Shi et al. (ISSTA 2023). "semantic" reads POJ-104
# (programs of different authors solving one problem), so it needs the user's copy of it;
# "invariance" groups a function with its own rewrites (renamed, laid out anew), made offline.
PROPERTIES = ("lexical", "syntactic", "syntactic-ngrams", "structural", "semantic", "invariance")
NEEDS_POJ104 = frozenset({"semantic"})

# Which sub-word of a code token the lexical probe reads: the last (the paper's scripts: by then
# a left-to-right model has seen the whole token) or the first.
SUBWORDS = ("last", "first")

IGNORED_LABEL = -100  # the label PyTorch's cross-entropy skips

COMPLEXITY_CLASSES = 6  # classes 1..5, and 6 for a complexity of 6 or more


def properties_to_probe(choice: str, has_poj104: bool) -> tuple[str, ...]:
    """The properties of `--property CHOICE`: "all" is every property the inputs allow."""
    if choice == "all":
        return tuple(name for name in PROPERTIES if has_poj104 or name not in NEEDS_POJ104)
    if choice in NEEDS_POJ104 and not has_poj104:
        raise UserError(f"the {choice} probe reads POJ-104: pass --poj104 DIR (CodeXGLUE's Clone-detection-POJ-104 "
                        "train.jsonl and test.jsonl), or probe 'invariance' (a function and its rewrites)")
    return (choice,)


def align_to_subwords(
    code_tokens_with_types: list[tuple[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    subword: str = "last",
) -> tuple[list[int], list[int]]:
    """The model's `input_ids` for the code tokens and one lexical label per position.

    The source tokens are tokenized as pre-split words (`is_split_into_words=True`; needs a fast
    tokenizer for `word_ids()`), each after a space, truncated and padded to `max_length`: the ids of
    the space-joined tokens, as the tasks read CodeSearchNet's code tokens (a byte-level BPE would
    otherwise read them glued together, "returnx"; a WordPiece splits on the space anyway). One
    sub-word of each source token, its last or its first (`subword`, one of SUBWORDS), is labelled
    with the index of its type in LEXICAL_TYPES; special tokens, the other sub-words and padding
    get IGNORED_LABEL (-100). A source token cut off by truncation (for "last": any of its
    sub-words), or one the tokenizer turns into no sub-word at all, gets no label.
    """
    if subword not in SUBWORDS:
        raise ValueError(f"subword must be one of {SUBWORDS}, got {subword!r}")
    if not tokenizer.is_fast:
        raise ValueError("align_to_subwords needs a fast tokenizer (for word_ids)")
    words = [text if index == 0 else " " + text for index, (text, _) in enumerate(code_tokens_with_types)]
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length, padding="max_length")
    word_ids = encoding.word_ids()
    if subword == "first":
        labelled = {position: word for position, word in enumerate(word_ids) if word is not None and
                    (position == 0 or word_ids[position - 1] != word)}
    else:
        # A word's last sub-word is where its sub-words end, unless truncation cut it short there:
        # count each word's sub-words without truncation.
        whole = Counter(tokenizer(words, is_split_into_words=True).word_ids())
        seen: Counter[int] = Counter()
        labelled = {}
        for position, word in enumerate(word_ids):
            if word is not None:
                seen[word] += 1
                if seen[word] == whole[word]:
                    labelled[position] = word
    labels = [
        LEXICAL_TYPES.index(code_tokens_with_types[labelled[position]][1]) if position in labelled else IGNORED_LABEL
        for position in range(len(word_ids))
    ]
    return list(encoding["input_ids"]), labels


def complexity_class(value: int) -> int:
    """The structural probe's class of a complexity: 1..5 as is, 6 for anything of 6 or more."""
    if value < 1:
        raise ValueError(f"cyclomatic complexity is at least 1, got {value}")
    return min(value, COMPLEXITY_CLASSES)
