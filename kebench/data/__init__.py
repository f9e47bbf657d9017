"""Benchmark data: one EditCase type, loaders per suite, shipped files."""

from kebench.data.case import EditCase, EditRequest, Probe
from kebench.data.corpus import wikitext_paragraphs
from kebench.data.formats import FORMATS, Format, detect_format, load_file, parse_records, register_format
from kebench.data.shipped import file_sha256, open_text, read_records, shipped_names, shipped_path
from kebench.data.suites import DatasetSpec, load_cases, sample_cases, training_pool
from kebench.data.zsre import ZSRE_TEMPLATE

__all__ = [
    "FORMATS",
    "ZSRE_TEMPLATE",
    "DatasetSpec",
    "EditCase",
    "EditRequest",
    "Format",
    "Probe",
    "detect_format",
    "file_sha256",
    "load_cases",
    "load_file",
    "open_text",
    "parse_records",
    "read_records",
    "register_format",
    "sample_cases",
    "shipped_names",
    "shipped_path",
    "training_pool",
    "wikitext_paragraphs",
]
