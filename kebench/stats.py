"""Second moments of the MLP keys (MEMIT's C₀ = E[k kᵀ]) over a text corpus, cached on disk.

MEMIT weighs its update against C₀ so edits leave typical keys' outputs alone; AlphaEdit
projects updates onto C₀'s null space. C₀ is uncentred and normalised by the token count.

- One pass over the corpus fills every requested layer (pre-hooks on several output
  projections at once; the forward stops after the highest one).
- Per-batch Gram matrices are formed and summed in float64.
- The cache file is keyed by everything the numbers depend on (weights checksum, module,
  token budget, sequence length, corpus checksum, dtype) and stores that key and a checksum
  of the tensor, both verified on load: a corrupt or mismatched file is recomputed, never used.
  Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kebench.errors import ConfigError, DataError
from kebench.hooks import StopForward
from kebench.io import atomic_torch_save
from kebench.models.loaded import LoadedModel
from kebench.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_N_TOKENS = 100_000
DEFAULT_SEQ_LEN = 256
DEFAULT_BATCH_TOKENS = 4096

Corpus = str | Path | Sequence[str] | None


def stats_dir(cache_dir: str | Path | None = None) -> Path:
    """Where statistics live: `cache_dir`, else $KEBENCH_CACHE/stats, else ~/.cache/kebench/stats."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("KEBENCH_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "kebench") / "stats"


def corpus_texts(corpus: Corpus = None) -> list[str]:
    """The texts statistics are computed on.

    None: the shipped WikiText, <unk>-free part only (lines 1-2947), headings dropped.
    A path: one text per non-empty line (.txt or .txt.gz). A sequence: used as given.
    """
    if corpus is None:
        from kebench.data.corpus import wikitext_paragraphs

        return wikitext_paragraphs(unk_free=True)
    if isinstance(corpus, (str, Path)):
        from kebench.data.shipped import open_text

        with open_text(Path(corpus).expanduser()) as f:
            texts = [line.strip() for line in f]
        texts = [t for t in texts if t]
    else:
        texts = [t for t in corpus if t.strip()]
    if not texts:
        raise DataError(f"corpus {corpus!r} holds no text; pass a file with one paragraph per line")
    return texts


def texts_sha256(texts: Sequence[str]) -> str:
    """Checksum of the corpus content actually used (not of the file it came from)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data).hexdigest()


# ----------------------------------------------------------------------------- tokens


def token_chunks(tokenizer, texts: Sequence[str], n_tokens: int, seq_len: int) -> list[list[int]]:
    """Exactly `n_tokens` tokens of the corpus in windows of at most `seq_len`.

    Texts are joined with newlines into one stream and cut into windows; each window starts
    with the tokenizer's own leading special tokens (e.g. BOS) so keys are seen in the same
    setting as edit prompts, which are tokenised with them.
    """
    if n_tokens < 1 or seq_len < 2:
        raise ConfigError(f"need n_tokens >= 1 and seq_len >= 2 (got {n_tokens}, {seq_len})")
    lead = _leading_special_ids(tokenizer)
    body = seq_len - len(lead)
    if body < 1:
        raise ConfigError(f"seq_len {seq_len} leaves no room after {len(lead)} special tokens; raise seq_len")
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        stream.extend(newline)
        if len(stream) >= n_tokens:  # more than enough: windows also hold special tokens
            break
    chunks: list[list[int]] = []
    left, pos = n_tokens, 0
    while left > 0:
        # A remainder no longer than the special prefix is taken as plain text.
        head = lead if left > len(lead) else []
        take = min(seq_len, left) - len(head)
        if pos + take > len(stream):
            raise ConfigError(
                f"the corpus has fewer than n_tokens={n_tokens} tokens; lower n_tokens or pass a larger corpus"
            )
        chunks.append(head + stream[pos : pos + take])
        pos += take
        left -= take + len(head)
    return chunks


def _leading_special_ids(tokenizer) -> list[int]:
    with_special = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    if with_special[-len(plain):] == plain:
        return list(with_special[: len(with_special) - len(plain)])
    return []


# ----------------------------------------------------------------------------- compute


@dataclass
class SecondMoment:
    """Running Σ k kᵀ (float64) and token count for one layer."""

    total: torch.Tensor
    count: int = 0

    def add(self, keys: torch.Tensor) -> None:
        k = keys.reshape(-1, keys.shape[-1]).to(torch.float64)
        self.total.addmm_(k.T, k)
        self.count += k.shape[0]

    def moment(self) -> torch.Tensor:
        return self.total / self.count


def compute_second_moments(
    lm: LoadedModel,
    layers: Sequence[int],
    chunks: Sequence[Sequence[int]],
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> dict[int, torch.Tensor]:
    """E[k kᵀ] of the MLP keys at `layers`, over all tokens of `chunks`, in one pass."""
    adapter, model = lm.adapter, lm.model
    layers = sorted(set(layers))
    d_ff = adapter.key_size
    acc = {layer: SecondMoment(torch.zeros(d_ff, d_ff, dtype=torch.float64, device=lm.device)) for layer in layers}
    top = layers[-1]

    def make_hook(layer: int):
        def hook(_module, args):
            acc[layer].add(args[0].detach())
            if layer == top:
                raise StopForward  # nothing above the top layer is needed

        return hook

    batches = _batches_by_length(chunks, batch_tokens)
    handles = [adapter.mlp_out(layer).register_forward_pre_hook(make_hook(layer)) for layer in layers]
    try:
        with torch.inference_mode(), progress_bar(f"key statistics, layers {_span(layers)}", len(batches)) as bar:
            for batch in batches:
                ids = torch.tensor(batch, dtype=torch.long, device=lm.device)
                try:
                    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
                except StopForward:
                    pass
                bar.advance()
    finally:
        for h in handles:
            h.remove()
    return {layer: acc[layer].moment().cpu() for layer in layers}


def _batches_by_length(chunks: Sequence[Sequence[int]], batch_tokens: int) -> list[list[Sequence[int]]]:
    """Group equal-length windows (no padding) into batches of about `batch_tokens` tokens."""
    by_len: dict[int, list[Sequence[int]]] = {}
    for c in chunks:
        by_len.setdefault(len(c), []).append(c)
    batches = []
    for length, group in sorted(by_len.items(), reverse=True):
        size = max(1, batch_tokens // length)
        batches.extend(group[i : i + size] for i in range(0, len(group), size))
    return batches


def _span(layers: Sequence[int]) -> str:
    return ",".join(str(x) for x in layers)


# ----------------------------------------------------------------------------- cache


def cache_key(lm: LoadedModel, layer: int, n_tokens: int, seq_len: int, corpus_sha: str) -> dict[str, object]:
    """Everything the statistics of one layer depend on."""
    return {
        "format": FORMAT_VERSION,
        "stat": "mlp_key_second_moment",
        "weights_sha256": lm.weights_sha256,
        "layer": layer,
        "module": lm.adapter.mlp_out_name(layer),
        "n_tokens": n_tokens,
        "seq_len": seq_len,
        "corpus_sha256": corpus_sha,
        "dtype": str(lm.dtype).removeprefix("torch."),
    }


def cache_path(root: Path, key: dict[str, object]) -> Path:
    """Readable and fully parameterised name; the digest covers the whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    module = str(key["module"]).replace(".", "_")
    name = f"{module}-t{key['n_tokens']}-s{key['seq_len']}-{key['dtype']}-{digest}.pt"
    return root / str(key["weights_sha256"])[:16] / name


def load_cached(path: Path, key: dict[str, object]) -> torch.Tensor | None:
    """The cached matrix if the file exists, reads, matches `key` and its checksum; else None."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cov = blob["cov"]
        problem = None
        if blob.get("key") != key:
            problem = "its key does not match"
        elif not isinstance(cov, torch.Tensor) or cov.dtype != torch.float64 or cov.ndim != 2:
            problem = "it holds no float64 matrix"
        elif tensor_sha256(cov) != blob.get("sha256"):
            problem = "its checksum does not match (corrupt)"
    except Exception as exc:  # unreadable/truncated file: recompute
        problem = f"it cannot be read ({type(exc).__name__})"
    if problem is not None:
        log.warning("ignoring cached statistics %s: %s; recomputing", path, problem)
        return None
    return cov


def save_cached(path: Path, key: dict[str, object], cov: torch.Tensor) -> None:
    """Write atomically: a reader sees the old file or the complete new one, never a partial one."""
    cov = cov.detach().cpu().contiguous()
    atomic_torch_save(path, {"key": key, "sha256": tensor_sha256(cov), "cov": cov})


def layer_covariance(
    lm: LoadedModel,
    layers: int | Sequence[int],
    *,
    n_tokens: int = DEFAULT_N_TOKENS,
    seq_len: int = DEFAULT_SEQ_LEN,
    corpus: Corpus = None,
    cache_dir: str | Path | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
) -> dict[int, torch.Tensor]:
    """C₀ = E[k kᵀ] (float64, [d_ff, d_ff], normalised by token count) of each layer's MLP keys.

    Cached layers are loaded; the missing ones are computed together in one corpus pass.
    """
    layers = sorted({layers} if isinstance(layers, int) else set(layers))
    if not layers:
        raise ConfigError("layer_covariance needs at least one layer")
    for layer in layers:
        lm.adapter.mlp_out_name(layer)  # range check, ModelError if out of range
    texts = corpus_texts(corpus)
    corpus_sha = texts_sha256(texts)
    root = stats_dir(cache_dir)
    keys = {layer: cache_key(lm, layer, n_tokens, seq_len, corpus_sha) for layer in layers}
    out: dict[int, torch.Tensor] = {}
    for layer in layers:
        cached = load_cached(cache_path(root, keys[layer]), keys[layer])
        if cached is not None:
            out[layer] = cached
    missing = [layer for layer in layers if layer not in out]
    if missing:
        chunks = token_chunks(lm.tokenizer, texts, n_tokens, seq_len)
        fresh = compute_second_moments(lm, missing, chunks, batch_tokens)
        for layer, cov in fresh.items():
            save_cached(cache_path(root, keys[layer]), keys[layer], cov)
            out[layer] = cov
    return {layer: out[layer] for layer in layers}


def iter_cached(cache_dir: str | Path | None = None) -> Iterator[Path]:
    """Cached statistics files (for `kebench stats --list`)."""
    root = stats_dir(cache_dir)
    if root.is_dir():
        yield from sorted(root.glob("*/*.pt"))
