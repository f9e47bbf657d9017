"""load_model: the embedded default, a local HF folder, a .gguf file or a hub id -> LoadedModel."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
from torch import nn

from kebench.errors import ConfigError, ModelError
from kebench.models.embedded import default_encoder_path, default_model_dir, notice
from kebench.models.loaded import LoadedModel

__all__ = ["load_model", "default_encoder_path", "resolve_device", "resolve_dtype", "weights_checksum"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def resolve_device(device: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (cuda when available); CUDA that is absent is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("CUDA requested but not available; use --device cpu")
    return dev


def _check_device_map(device_map: str, device: torch.device) -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise ConfigError("--device-map needs accelerate; pip install accelerate") from None
    if device_map not in ("auto", "balanced", "balanced_low_0", "sequential", "cpu") and not device_map.startswith("cuda"):
        raise ConfigError(f"unknown device map {device_map!r}; use auto, balanced, balanced_low_0, sequential or cpu")
    if device_map != "cpu" and device.type != "cuda":
        raise ConfigError(f"--device-map {device_map} spreads a model over GPUs; add --device cuda (or use --device-map cpu)")


def resolve_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def weights_checksum(model: nn.Module) -> str:
    """sha256 over the state dict in name order: names, shapes and float16-rounded values.

    Rounding to float16 makes float32 and float16 loads of a float16 checkpoint agree (the key of
    covariance caches); tied tensors are hashed once. ~0.2 s for 135M float32 parameters on 2 CPU cores.
    """
    h = hashlib.sha256()
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, t in sorted(model.state_dict().items()):
        key = (t.data_ptr(), tuple(t.shape))
        h.update(f"{name}:{tuple(t.shape)}:".encode())
        if key in seen:
            h.update(f"tied:{seen[key]};".encode())
            continue
        seen[key] = name
        t = t.detach()
        if t.is_floating_point():
            t = t.to(torch.float16)
        h.update(t.cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.endswith(".gguf") or "\\" in name or name.count("/") > 1


def _local_source(path: Path) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a local folder or .gguf file."""
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path} is a file but not a .gguf; pass a folder with config.json, a .gguf file, or a hub id")
        return path.parent, path.name
    has_weights = any(next(path.glob(p), None) for p in WEIGHT_FILES)
    if (path / "config.json").is_file() and has_weights:
        return path, None
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return path, ggufs[0].name
    if ggufs:
        raise ModelError(f"{path} holds several .gguf files ({', '.join(g.name for g in ggufs)}); pass one of them")
    raise ModelError(f"{path} has no config.json with weights and no .gguf file; pass a model folder, a .gguf file, or a hub id")


def _from_pretrained(
    source: str | Path, gguf: str | None, dtype: torch.dtype, device_map: str | None = None
) -> tuple[nn.Module, object]:
    """Model and tokenizer; the tokenizer comes from the folder's own files when it has any, else the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf} if gguf else {}
    placed = {"device_map": device_map} if device_map else {}
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra, **placed)
    folder_tok = isinstance(source, Path) and any((source / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(source, **({} if folder_tok else extra))
    return model, tokenizer


def _load_default(dtype: torch.dtype, cache_dir: Path | None) -> tuple[nn.Module, object, Path]:
    """The default model from its converted cache, rebuilding the cache once if it cannot be read."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_dir(cache_dir)
    for attempt in range(2):
        try:
            model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, output_loading_info=True)
            bad = info.get("missing_keys") or info.get("unexpected_keys") or info.get("mismatched_keys")
            if bad:
                raise ValueError(f"weights do not match the config: {sorted(bad)[:3]}")
            return model, AutoTokenizer.from_pretrained(folder), folder
        except Exception as exc:  # any failure reading our own cache means: rebuild it
            if attempt:
                raise ModelError(f"the rebuilt default model at {folder} does not load ({exc}); "
                                 "delete it and report this") from None
            notice(f"cannot load the cached default model ({str(exc).splitlines()[0]}); rebuilding")
            shutil.rmtree(folder, ignore_errors=True)
            folder = default_model_dir(cache_dir, rebuild=True)
    raise AssertionError("unreachable")


def load_model(name: str | None, *, device: str = "cpu", dtype: str = "float32",
               cache_dir: Path | None = None, device_map: str | None = None) -> LoadedModel:
    """Load a causal LM for editing: eval mode, all parameters frozen (editors unfreeze what they train).

    `name`: None/"default" (embedded SmolLM2-135M-Instruct, cached as float16 safetensors), a local
    HF folder, a .gguf file, or a hub id. `cache_dir` overrides $KEBENCH_CACHE (~/.cache/kebench).
    `device_map` ("auto", "balanced", "sequential", ...): place a model too large for one GPU across
    several with accelerate; inputs then go to the device of the first parameters (the embeddings).
    """
    dev, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    if device_map is not None:
        _check_device_map(device_map, dev)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # kebench shows its own progress; per-tensor bars only add noise
    if name is None or name == "default":
        if device_map is not None:
            raise ConfigError("--device-map is for models larger than one device; the default 135M model needs none")
        model, tokenizer, folder = _load_default(torch_dtype, cache_dir)
        name, source = "default", str(folder)
    else:
        path = Path(name).expanduser()
        if path.exists():
            folder, gguf = _local_source(path)
            source = str(path)
            try:
                model, tokenizer = _from_pretrained(folder, gguf, torch_dtype, device_map)
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot load model from {path}: {str(exc).splitlines()[0]}") from None
        elif _looks_like_path(name):
            raise ModelError(f"model path {name} does not exist; pass a folder with config.json, a .gguf file, or a hub id")
        else:
            source = name
            try:
                model, tokenizer = _from_pretrained(name, None, torch_dtype, device_map)
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot load {name!r} from the Hugging Face hub and no such local folder exists "
                                 f"({str(exc).splitlines()[0]}); check the id, network or HF_TOKEN, or pass a local path") from None
    if getattr(tokenizer, "pad_token", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        model.to(dev)
    model.eval().requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, weights_sha256=weights_checksum(model), source=source)
