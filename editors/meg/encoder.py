"""MeG's query encoder (stage 1): a pretrained sentence encoder, last layer tuned contrastively.

Default: all-MiniLM-L6-v2 with mean pooling (the paper: bert-base-uncased, [CLS] pooling;
any hub id or folder works). Only the last transformer layer trains, so the layers below
run once per text and are replayed from cache. The objective is InfoNCE with in-batch
negatives on (prompt, paraphrase) pairs from a pool disjoint from the edits, with the two
fixes MEG.md §10.2 asks for: gradients are zeroed every step, and every original appears
once per batch (no false negatives). The tuned layer is cached on disk, keyed by every
setting that shapes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from kebench.errors import ConfigError, ModelError
from kebench.io import atomic_save_safetensors, atomic_write_json
from kebench.models.embedded import cache_root as embedded_cache_root
from kebench.models.load import default_encoder_path
from kebench.progress import progress_bar

from kebench.tokens import pad_right
from kebench.hooks import capture_block_output, replay_from

def cache_root() -> Path:
    """Where tuned encoder heads are cached: kebench's cache ($KEBENCH_CACHE or ~/.cache/kebench) / meg."""
    return embedded_cache_root() / "meg"


def _layer_list(model: nn.Module) -> nn.ModuleList:
    for name in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, nn.ModuleList):
            return module
    raise ModelError(f"no transformer layer list found in encoder {type(model).__name__}; use a BERT-style encoder")


def _resolve_pooling(name_or_path: str, pooling: str) -> str:
    """'auto': the sentence-transformers pooling config if the folder has one, else [CLS] (as in the paper)."""
    if pooling in ("mean", "cls"):
        return pooling
    if pooling != "auto":
        raise ConfigError(f"unknown encoder pooling {pooling!r}; use mean, cls or auto")
    cfg = Path(name_or_path) / "1_Pooling" / "config.json"
    if cfg.exists():
        data = json.loads(cfg.read_text())
        return "mean" if data.get("pooling_mode_mean_tokens") else "cls"
    return "cls"


class QueryEncoder:
    """Text -> embedding; only `head` (the last layer) is ever trained."""

    def __init__(self, model: nn.Module, tokenizer: object, pooling: str = "mean", name: str = "", max_length: int = 128):
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"unknown encoder pooling {pooling!r}; use mean or cls")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.name = name
        self.max_length = max_length
        self.layers = _layer_list(model)
        for p in model.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, name_or_path: str = "default", pooling: str = "auto", device: str | torch.device = "cpu"):
        """Load a folder or hub id ('default' = the embedded all-MiniLM-L6-v2)."""
        from transformers import AutoModel, AutoTokenizer

        path = str(default_encoder_path()) if name_or_path == "default" else name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path, dtype=torch.float32)
        except OSError as exc:
            raise ModelError(
                f"cannot load query encoder {path!r}: {exc}; pass a local folder or a reachable hub id"
            ) from None
        return cls(model.to(device), tokenizer, _resolve_pooling(path, pooling), name=name_or_path)

    @property
    def head(self) -> nn.Module:
        return self.layers[-1]

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 128, normalize: bool = True, *,
               label: str | None = None) -> torch.Tensor:
        """Embeddings [n, dim] (L2-normalised by default); texts are length-sorted to cut padding. With `label`,
        a progress bar of that name counts the texts (for the large encodings: 10,000 edits' conditions)."""
        if not texts:
            return torch.zeros(0, self.dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.zeros(len(texts), self.dim)
        with progress_bar(label, len(order)) if label else contextlib.nullcontext() as bar:
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                batch = self.tokenize([texts[i] for i in idx])
                hidden = self.model(**batch).last_hidden_state
                emb = self.pool(hidden, batch["attention_mask"]).float().cpu()
                out[torch.tensor(idx)] = emb
                if bar is not None:
                    bar.advance(len(idx))
        return nn.functional.normalize(out, dim=-1) if normalize else out

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}

    def load_head(self, state: dict[str, torch.Tensor]) -> None:
        self.head.load_state_dict({k: v.to(self.device) for k, v in state.items()})


@dataclass(frozen=True)
class ContrastiveSettings:
    """Everything that shapes the tuned head (also its cache key)."""

    steps: int = 100
    batch_size: int = 128
    lr: float = 1e-4
    temperature: float = 0.05
    seed: int = 0
    heldout: int = 200


def _group_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """De-duplicate originals: each original with all its distinct paraphrases."""
    groups: dict[str, list[str]] = {}
    for original, para in pairs:
        if para and para != original and para not in groups.setdefault(original, []):
            groups[original].append(para)
    return [(o, ps) for o, ps in groups.items() if ps]


def retrieval_accuracy(encoder: QueryEncoder, groups: Sequence[tuple[str, list[str]]]) -> float:
    """Fraction of paraphrases whose nearest original (cosine) is their own."""
    if not groups:
        return float("nan")
    originals = encoder.encode([o for o, _ in groups])
    paras, owner = [], []
    for i, (_, ps) in enumerate(groups):
        paras += ps
        owner += [i] * len(ps)
    sims = encoder.encode(paras) @ originals.T
    return float((sims.argmax(-1) == torch.tensor(owner)).float().mean())


class _HeadInputs:
    """Each text's tokens and the (frozen) hidden state entering the last layer, stored per text."""

    def __init__(self, encoder: QueryEncoder, texts: Sequence[str], batch_size: int = 128) -> None:
        self.encoder = encoder
        self.index = {t: i for i, t in enumerate(texts)}
        self.ids: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        self.hidden: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        start = len(encoder.layers) - 1
        with progress_bar("MeG: encoding contrastive pool", len(order)) as bar:
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                batch = encoder.tokenize([texts[i] for i in idx])
                hidden, self.tuple_out = capture_block_output(encoder.model, encoder.layers, start - 1, **batch)
                lengths = batch["attention_mask"].sum(1)
                for row, i in enumerate(idx):
                    n = int(lengths[row])
                    self.ids[i] = batch["input_ids"][row, :n].cpu()
                    self.hidden[i] = hidden[row, :n].cpu()
                bar.advance(len(idx))

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings with grad through the last layer (others replayed from cache)."""
        enc = self.encoder
        rows = [self.index[t] for t in texts]
        width = max(len(self.ids[r]) for r in rows)
        pad = enc.tokenizer.pad_token_id or 0
        ids, mask = pad_right([self.ids[r] for r in rows], pad)
        hidden = torch.zeros(len(rows), width, self.hidden[rows[0]].shape[-1])
        for j, r in enumerate(rows):
            hidden[j, : len(self.ids[r])] = self.hidden[r]
        dev = enc.device
        ids, mask = ids.to(dev), mask.to(dev)
        cached = hidden.to(dev)
        with replay_from(enc.layers, len(enc.layers) - 2, lambda: cached, self.tuple_out):
            out = enc.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return nn.functional.normalize(enc.pool(out, mask), dim=-1)


def tune_contrastive(
    encoder: QueryEncoder, pairs: Sequence[tuple[str, str]], settings: ContrastiveSettings
) -> dict[str, float]:
    """InfoNCE on (paraphrase -> its original) with the other originals of the batch as negatives."""
    rng = random.Random(settings.seed)
    groups = _group_pairs(pairs)
    rng.shuffle(groups)
    n_held = min(settings.heldout, len(groups) // 5)  # a fifth at most: most pairs train
    heldout, train = groups[:n_held], groups[n_held:]
    if len(train) < 2:
        raise ConfigError(
            "contrastive encoder tuning needs at least 2 distinct (prompt, paraphrase) pairs; give a larger pool"
        )
    before = retrieval_accuracy(encoder, heldout)
    texts = sorted({o for o, _ in train} | {p for _, ps in train for p in ps})
    inputs = _HeadInputs(encoder, texts)
    head = encoder.head
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=0.0)
    batch = min(settings.batch_size, len(train))
    losses = []
    try:
        with progress_bar("MeG: tuning query encoder", settings.steps) as bar:
            for _ in range(settings.steps):
                chosen = rng.sample(train, batch)  # distinct originals: no false negatives
                anchors = inputs.embed([rng.choice(ps) for _, ps in chosen])
                originals = inputs.embed([o for o, _ in chosen])
                logits = anchors @ originals.T / settings.temperature
                loss = nn.functional.cross_entropy(logits, torch.arange(batch, device=logits.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                bar.advance()
    finally:
        for p in head.parameters():
            p.requires_grad_(False)
    after = retrieval_accuracy(encoder, heldout)
    return {
        "encoder_loss_first": losses[0] if losses else float("nan"),
        "encoder_loss_last": losses[-1] if losses else float("nan"),
        "encoder_heldout_retrieval_before": before,
        "encoder_heldout_retrieval_after": after,
        "encoder_train_pairs": float(sum(len(ps) for _, ps in train)),
    }


def head_cache_key(encoder: QueryEncoder, pairs: Sequence[tuple[str, str]], settings: ContrastiveSettings) -> str:
    digest = hashlib.sha256()
    head = {"encoder": encoder.name, "pooling": encoder.pooling, "max_length": encoder.max_length, **asdict(settings)}
    digest.update(json.dumps(head, sort_keys=True).encode())
    for original, para in pairs:
        digest.update(original.encode() + b"\x00" + para.encode() + b"\x01")
    return digest.hexdigest()[:20]


def tuned_encoder(
    encoder: QueryEncoder, pairs: Sequence[tuple[str, str]], settings: ContrastiveSettings, use_cache: bool = True
) -> dict[str, float]:
    """Tune `encoder`'s head in place, or load the cached head for identical settings and pairs."""
    from safetensors.torch import load_file

    if settings.steps <= 0 or not pairs:
        return {"encoder_tuned": 0.0}
    path = cache_root() / "encoder" / f"{head_cache_key(encoder, pairs, settings)}.safetensors"
    if use_cache and path.exists():
        encoder.load_head(load_file(str(path)))
        stats_path = path.with_suffix(".json")
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        return {**stats, "encoder_tuned": 1.0, "encoder_cache_hit": 1.0}
    stats = tune_contrastive(encoder, pairs, settings)
    if use_cache:  # stats first: the head's file is what marks a hit
        atomic_write_json(path.with_suffix(".json"), stats)
        atomic_save_safetensors(path, encoder.head_state())
    return {**stats, "encoder_tuned": 1.0, "encoder_cache_hit": 0.0}
