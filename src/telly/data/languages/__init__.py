"""Language plug-ins: one per programming language the data builders and probes read.

`LANGUAGES` maps a language's name to its plug-in (see `telly.data.language.Language`). Python
keeps its own `ast`-based implementation; Java and Ruby are the one tree-sitter implementation,
each set up by a `TreeSitterSpec`.
"""

from __future__ import annotations

from telly.data.language import CodeFunction, Language
from telly.data.languages.java import JAVA
from telly.data.languages.python import PYTHON
from telly.data.languages.ruby import RUBY

LANGUAGES: dict[str, Language] = {language.name: language for language in (PYTHON, JAVA, RUBY)}

__all__ = ["LANGUAGES", "CodeFunction", "Language"]
