"""kebench: a reproducible benchmark harness for knowledge editing of language models."""

__version__ = "0.1.0"
