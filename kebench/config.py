"""Typed hyperparameter dataclasses loaded from per-model YAML files (unknown keys rejected).

An editor's settings for a model live in `<editor>/configs/<model>.yaml`. The file is found by the
model's name, never by a table in code: a file's stem names the model (`gpt-j-6b.yaml` serves
`EleutherAI/gpt-j-6B`: compared without case or punctuation), or the file lists the names it serves
under `models:` (shell patterns, e.g. `"*llama-3*8b*"`); for a local folder the name its config.json
records (`_name_or_path`) and its architecture (`model_type`, e.g. a `llama.yaml`) are tried too.
A model no file serves gets `default.yaml` where the editor has one (settings that hold for any
model) and otherwise a one-line error listing the files that exist.

Settings may be grouped in sections (a field whose type is itself a dataclass, as MeG's `gate`);
YAML nests them and `--hparam` names them with a dot (`gate.alpha=0.1`). A dataclass may accept its
former flat names through a classmethod `renamed(key) -> str | None` (results files and job lines
written before the sections keep working).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import json
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kebench.errors import ConfigError

H = TypeVar("H")

MODELS_KEY = "models"  # the YAML key listing the model names a file serves (not a hyperparameter)


def _plain(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def model_names(model: str) -> list[str]:
    """The names `model` goes by, most specific first: as given ("default" is the embedded model), and
    for a local folder the name its config.json records and its architecture (`model_type`)."""
    from kebench.models.embedded import DEFAULT_NAME

    if model == "default":
        return [DEFAULT_NAME]
    config = Path(model) / "config.json"
    names = [Path(model).name if config.is_file() else model]  # a folder: its own name, not its parents'
    if config.is_file():
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            data = {}
        names += [str(data[k]) for k in ("_name_or_path", "model_type") if data.get(k)]
    return names


def _serves(path: Path, data: dict[str, Any], name: str) -> bool:
    low = name.lower()
    patterns = data.get(MODELS_KEY) or []
    return _plain(path.stem) in _plain(name) or any(fnmatch.fnmatch(low, str(p).lower()) for p in patterns)


def config_file(config_dir: Path, model: str) -> Path | None:
    """The YAML in `config_dir` that serves `model` (the longest matching stem where several do), else
    `default.yaml` if present, else None (no file at all in `config_dir`). Raises ConfigError naming the
    files that exist when there are model files but none serves `model` and there is no default."""
    files = sorted(p for p in config_dir.glob("*.yaml") if p.stem != "default")
    loaded = {p: _read(p) for p in files}
    for name in model_names(model):
        hits = [p for p in files if _serves(p, loaded[p], name)]
        if hits:
            return max(hits, key=lambda p: len(_plain(p.stem)))
    default = config_dir / "default.yaml"
    if default.exists():
        return default
    if not files:
        return None
    raise ConfigError(
        f"no settings for model {model!r} in {config_dir} (files: {', '.join(p.name for p in files)}); add "
        f"<model>.yaml there (or list the model under `{MODELS_KEY}:` in one), or pass your own with --hparams-file FILE")


@functools.lru_cache(maxsize=None)
def _read_cached(path: Path, mtime: float) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold key: value settings, not {type(data).__name__}")
    return data


def _read(path: Path) -> dict[str, Any]:
    return dict(_read_cached(path, path.stat().st_mtime))


def sections(cls: type) -> dict[str, type]:
    """The fields of dataclass `cls` that are sections (dataclasses themselves), by name."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def field_names(cls: type, prefix: str = "") -> list[str]:
    """Every setting of `cls`, sections' settings with dotted names (`gate.alpha`)."""
    subs = sections(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        out += field_names(subs[f.name], f"{prefix}{f.name}.") if f.name in subs else [prefix + f.name]
    return out


def _nest(cls: type, data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` with former names renamed and dotted keys put in their sections."""
    current = {f.name for f in dataclasses.fields(cls)}
    subs = sections(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)  # a section given as its settings object
        # a former name only where it is not a current one (MeG's `generator` is now a section)
        key = key if key in current and isinstance(value, dict) == (key in subs) else canonical_key(cls, key)
        head, dot, rest = key.partition(".")
        if dot and head in current and head not in subs:
            raise ConfigError(f"{head} is a single setting, not a section{f' in {source}' if source else ''}; set {head}=<value>")
        if dot:
            section = out.setdefault(head, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{head} is a section of settings in {source or 'the settings'}; set {head}.<name>")
            section[rest] = value
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def from_dict(cls: type[H], data: dict[str, Any], source: str = "", prefix: str = "") -> H:
    """Build dataclass `cls` from `data` (sections as nested dicts or dotted keys), naming any unknown key
    and the file it came from. `prefix`: the section `cls` is (for the messages)."""
    data = _nest(cls, {k: v for k, v in data.items() if k != MODELS_KEY}, source)
    where = f" in {source}" if source else ""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown hyperparameter(s) {', '.join(prefix + u for u in unknown)}{where}; "
                          f"valid: {', '.join(field_names(cls, prefix))}")
    subs = sections(cls)
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    clean: dict[str, Any] = {}
    for k, v in data.items():
        if k in subs:
            if not isinstance(v, dict | subs[k]):
                raise ConfigError(f"{prefix}{k} is a section of settings{where}; set {prefix}{k}.<name>")
            v = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
            clean[k] = from_dict(subs[k], v, source, f"{prefix}{k}.")
        else:  # YAML gives lists; frozen configs use tuples.
            clean[k] = tuple(v) if isinstance(v, list) and "tuple" in types[k] else v
    return cls(**clean)


def load_hparams(cls: type[H], config_dir: Path | None, model_name: str, settings_file: str | None = None) -> H:
    """`cls` with the settings of `settings_file` where given (a user's own, `--hparams-file`), else of the file in
    `config_dir` that serves `model_name` (`config_file`)."""
    if settings_file is not None:
        path = Path(settings_file)
        if not path.is_file():
            raise ConfigError(f"--hparams-file {settings_file!r} is not a file; pass a YAML of key: value settings")
        return from_dict(cls, _read(path), str(path))
    path = config_file(config_dir, model_name) if config_dir is not None else None
    return cls() if path is None else from_dict(cls, _read(path), str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' with value parsed as YAML (numbers, lists, booleans); sections' keys are dotted."""
    if "=" not in text:
        raise ConfigError(f"hyperparameter override {text!r} must look like key=value (e.g. --hparam lr=0.1)")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def canonical_key(cls: type, key: str) -> str:
    """`key` under its current name (a former flat name renamed by `cls.renamed`)."""
    renamed = getattr(cls, "renamed", None)
    return (renamed(key) if renamed is not None else None) or key


def with_overrides(hparams: H, overrides: dict[str, Any]) -> H:
    """`hparams` with `overrides` (dotted keys for sections) applied."""
    base = dataclasses.asdict(hparams)  # type: ignore[call-overload]
    for key, value in _nest(type(hparams), overrides, "overrides").items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return from_dict(type(hparams), base, "overrides")


def flat_record(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested settings dict with sections flattened to dotted keys (`{"gate": {"alpha": 1}}` -> `gate.alpha`)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat_record(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
