"""Datasets from real source code, and readers for the official formats.

`BUILDERS` maps each task to the function that writes its data set from source trees
of any language in `telly.data.languages.LANGUAGES` (`language="java"`; Python by default).
"""

from __future__ import annotations

from telly.data.clones import build_clones
from telly.data.generation import build_code_generation, build_line_completion
from telly.data.corpus import build_code_search, detect_language, language_named

BUILDERS = {
    "code-search": build_code_search,
    "code-summarization": build_code_search,  # the same CodeSearchNet format; the target is the docstring
    "clone-detection": build_clones,
    "code-generation": build_code_generation,
    "code-completion": build_line_completion,
}

__all__ = ["BUILDERS", "detect_language", "language_named"]
