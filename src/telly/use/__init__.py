"""Using what a run fine-tuned: standard model folders (export), prediction files in the
official evaluators' formats (predict), and search over a source tree (search)."""
