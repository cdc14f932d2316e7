"""Studying what a code model's layers encode: probing properties and representational similarity."""
