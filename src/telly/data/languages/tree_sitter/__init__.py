"""One implementation of the `Language` interface on tree-sitter syntax trees, for Java and Ruby.

Everything here is language-neutral; a `TreeSitterSpec` names what differs between languages
(`spec.py`, with the reading of trees every part shares). `TreeSitterLanguage` (`language.py`)
hands each job to its part:
- `extract.py`: every method with a body, its doc comment, its code without it and its tokens;
  for generation and completion data, its tokens joined by spaces (CONCODE, CodeXGLUE Java);
- `properties.py`: the probed properties: each token's lexical type, SBT, cyclomatic complexity;
- `rewrite.py`: clones: locals renamed, comments dropped, the layout changed.
"""

from telly.data.languages.tree_sitter.language import TreeSitterLanguage
from telly.data.languages.tree_sitter.spec import TreeSitterSpec

__all__ = ["TreeSitterLanguage", "TreeSitterSpec"]
