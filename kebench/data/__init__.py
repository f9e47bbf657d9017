"""Benchmark data: one EditCase type, record layouts, shipped files, and the loader of a suite's files.

Nothing here imports from kebench above kebench.data (tests/test_imports.py): the suite registry,
`load_cases` by suite name and `training_pool` live in kebench.suites.
"""

from kebench.data.case import EditCase, EditRequest, Probe
from kebench.data.corpus import wikitext_paragraphs
from kebench.data.formats import FORMATS, Format, detect_format, parse_records, register_format
from kebench.data.shipped import file_sha256, open_text, read_records, shipped_names, shipped_path
from kebench.data.loading import LoadedData, SuiteData, TrainingPool, check_scale, sample_cases
from kebench.data.zsre import ZSRE_TEMPLATE

__all__ = [
    "FORMATS",
    "ZSRE_TEMPLATE",
    "LoadedData",
    "EditCase",
    "EditRequest",
    "Format",
    "Probe",
    "SuiteData",
    "TrainingPool",
    "check_scale",
    "detect_format",
    "file_sha256",
    "open_text",
    "parse_records",
    "read_records",
    "register_format",
    "sample_cases",
    "shipped_names",
    "shipped_path",
    "wikitext_paragraphs",
]
