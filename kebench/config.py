"""Typed hyperparameter dataclasses loaded from per-model YAML files (unknown keys rejected)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kebench.errors import ConfigError

H = TypeVar("H")

# Model name fragments -> config file stem. First match wins; "default" is the fallback.
MODEL_KEYS: tuple[tuple[str, str], ...] = (
    (r"smollm2-135m|^default$", "smollm2-135m"),
    (r"gpt2-xl", "gpt2-xl"),
    (r"gpt-j|gptj", "gpt-j-6b"),
    (r"llama-3.*8b|llama3.*8b", "llama3-8b"),
)


def model_key(model_name: str) -> str:
    """The config-file stem for a model name or hub id (e.g. 'EleutherAI/gpt-j-6B' -> 'gpt-j-6b')."""
    low = model_name.lower()
    for pattern, key in MODEL_KEYS:
        if re.search(pattern, low):
            return key
    return "default"


def from_dict(cls: type[H], data: dict[str, Any], source: str = "") -> H:
    """Build dataclass `cls` from `data`, naming any unknown key and the file it came from."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in {source}" if source else ""
        raise ConfigError(f"unknown hyperparameter(s) {', '.join(unknown)}{where}; valid: {', '.join(sorted(names))}")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    clean = {}
    for k, v in data.items():
        # YAML gives lists; frozen configs use tuples.
        clean[k] = tuple(v) if isinstance(v, list) and "tuple" in str(types[k]) else v
    return cls(**clean)


def load_hparams(cls: type[H], config_dir: Path, model_name: str) -> H:
    """Defaults for `model_name` from `config_dir/<model_key>.yaml`, else `default.yaml`, else the dataclass."""
    for stem in (model_key(model_name), "default"):
        path = config_dir / f"{stem}.yaml"
        if path.exists():
            data = yaml.safe_load(path.read_text()) or {}
            return from_dict(cls, data, str(path))
    return cls()


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' with value parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"hyperparameter override {text!r} must look like key=value (e.g. --hparam lr=0.1)")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def with_overrides(hparams: H, overrides: dict[str, Any]) -> H:
    merged = {**dataclasses.asdict(hparams), **overrides}
    return from_dict(type(hparams), merged, "overrides")
