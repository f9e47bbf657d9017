"""Per-edit neuron fitting (MeG stage 3), batched: many independent neurons in one pass.

Each edit gets its own neuron; a row's output depends only on its own neuron, so the
summed loss of a batch gives every neuron exactly its own gradient and all edits train
together (MEG.md §10.1). Cost savers (MEG.md §12): the blocks below the neuron's layer run
once without grad and are replayed from cache, logits are computed only at target
positions, and an edit leaves the batch as soon as it has converged (argmax = target on
every target token and mean NLL below a threshold). Edits that never converge keep
their last vector and are reported, not dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kebench.data.case import EditRequest
from kebench.editor import check_finite
from kebench.fit_cache import FitCache, resolve_fit
from kebench.models.loaded import LoadedModel
from kebench.optim import RowAdam
from kebench.progress import progress_bar

from editors.meg.code import NeuronCode
from editors.meg.neuron import DynamicNeuron, NeuronSpec
from kebench.scoring import encode_target
from kebench.tokens import pad_right
from kebench.hooks import capture_block_output, frozen, replay_from


@dataclass
class FitResult:
    """Fitted neurons [n, size] (CPU float32, request order) and per-edit diagnostics."""

    vectors: torch.Tensor
    converged: torch.Tensor  # bool [n]
    steps: torch.Tensor  # int [n]: updates until convergence (max_steps if never)
    nll: torch.Tensor  # mean target NLL with the fitted neuron, bare prompt
    efficacy: torch.Tensor  # bool [n]: argmax = target on every target token, fitted neuron alone (oracle)
    baseline_nll: torch.Tensor  # the unedited model's mean target NLL
    baseline_efficacy: torch.Tensor  # bool [n]: the unedited model already predicts target_new
    seconds: float
    chunks: int = 0  # groups of edits fitted together
    cached_chunks: int = 0  # of which read from the fit cache (their fitting time is not in `seconds`)
    cached_seconds: float = 0.0  # what the cached chunks took when they were fitted (where recorded)
    codes: torch.Tensor | None = None  # [n, code size] when fitted inside a NeuronCode's subspace

    def summary(self) -> dict[str, float | int]:
        n = max(len(self.converged), 1)
        return {
            "fit_edits": len(self.converged),
            "fit_converged": float(self.converged.float().sum() / n),
            "fit_failed": int((~self.converged).sum()),
            "fit_median_steps": float(self.steps.float().median()) if len(self.steps) else 0.0,
            "oracle_efficacy": float(self.efficacy.float().sum() / n),
            "oracle_nll": float(self.nll.mean()) if len(self.nll) else 0.0,
            "baseline_efficacy": float(self.baseline_efficacy.float().sum() / n),
            "baseline_nll": float(self.baseline_nll.mean()) if len(self.baseline_nll) else 0.0,
            "fit_seconds": self.seconds,
            "fit_chunks": self.chunks,
            "fit_cached_chunks": self.cached_chunks,
            "fit_cached_seconds": self.cached_seconds,
        }


def concat_fits(first: FitResult, then: FitResult) -> FitResult:
    """`first`'s edits followed by `then`'s (a growing sequence's edits so far); timings are `then`'s."""
    def cat(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        return None if a is None or b is None else torch.cat([a, b])

    return dataclasses.replace(then, **{
        name: cat(getattr(first, name), getattr(then, name))
        for name in ("vectors", "converged", "steps", "nll", "efficacy", "baseline_nll", "baseline_efficacy", "codes")
    })


@dataclass
class _Rows:
    """Tokenised rows (one per edit × prefix) and the flat list of target tokens."""

    input_ids: torch.Tensor  # [R, T], right padded
    attention_mask: torch.Tensor  # [R, T]
    edit: torch.Tensor  # [R] local edit index of each row
    bare: torch.Tensor  # [R] bool: the row is the unprefixed prompt
    tok_row: torch.Tensor  # [N] row of each target token
    tok_pos: torch.Tensor  # [N] position whose logits predict it
    tok_id: torch.Tensor  # [N] the target token id

    def subset(self, rows: torch.Tensor) -> _Rows:
        remap = torch.full((self.input_ids.shape[0],), -1, dtype=torch.long)
        remap[rows] = torch.arange(len(rows))
        keep = remap[self.tok_row] >= 0
        return _Rows(
            self.input_ids[rows],
            self.attention_mask[rows],
            self.edit[rows],
            self.bare[rows],
            remap[self.tok_row[keep]],
            self.tok_pos[keep],
            self.tok_id[keep],
        )


def build_rows(tokenizer: object, requests: Sequence[EditRequest], prefixes: Sequence[str] = ()) -> _Rows:
    """One row per (edit, context prefix): prefix + prompt + " " + target_new, right padded."""
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else (getattr(tokenizer, "eos_token_id", None) or 0)
    seqs, edit, bare, tok_row, tok_pos, tok_id = [], [], [], [], [], []
    for e, req in enumerate(requests):
        tgt = encode_target(tokenizer, req.target_new)
        for prefix in ("", *prefixes):
            prompt = list(tokenizer(prefix + req.text)["input_ids"])
            r = len(seqs)
            seqs.append(prompt + tgt)
            edit.append(e)
            bare.append(prefix == "")
            for j, t in enumerate(tgt):
                tok_row.append(r)
                tok_pos.append(len(prompt) - 1 + j)
                tok_id.append(t)
    ids, mask = pad_right(seqs, pad)
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return _Rows(ids, mask, as_long(edit), torch.tensor(bare), as_long(tok_row), as_long(tok_pos), as_long(tok_id))


def layer_stack(lm: LoadedModel) -> nn.ModuleList:
    """The ModuleList of decoder blocks (shared with the model's own forward)."""
    return lm.model.get_submodule(lm.adapter.spec.layers.rsplit(".{}", 1)[0])


class _Scorer:
    """Teacher-forced target scoring from the cached input of the neuron's layer."""

    def __init__(self, lm: LoadedModel, layer: int, neuron: DynamicNeuron, rows: _Rows) -> None:
        self.lm, self.layer, self.neuron = lm, layer, neuron
        self.base = lm.model.base_model
        self.layers = layer_stack(lm)
        dev = lm.device
        self.rows = rows
        self.ids, self.mask = rows.input_ids.to(dev), rows.attention_mask.to(dev)
        self.cache, self.tuple_out = None, False
        if layer > 0:
            self.cache, self.tuple_out = capture_block_output(
                self.base, self.layers, layer - 1, input_ids=self.ids, attention_mask=self.mask, use_cache=False
            )

    def score(self, rows: torch.Tensor, vectors: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, _Rows]:
        """Per-target-token NLL and argmax-correctness for `rows`, each row with its vector."""
        sub = self.rows.subset(rows)
        dev = self.lm.device
        idx = rows.to(dev)
        replayed = (
            replay_from(self.layers, self.layer - 1, lambda: self.cache[idx], self.tuple_out)
            if self.cache is not None
            else contextlib.nullcontext()
        )
        with replayed, self.neuron.vectors(vectors):
            out = self.base(input_ids=self.ids[idx], attention_mask=self.mask[idx], use_cache=False)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        picked = hidden[sub.tok_row.to(dev), sub.tok_pos.to(dev)]
        logits = self.lm.adapter.lm_head(picked).float()
        tgt = sub.tok_id.to(dev)
        nll = nn.functional.cross_entropy(logits, tgt, reduction="none")
        return nll, logits.argmax(-1).eq(tgt), sub


def _per_edit(sub: _Rows, nll: torch.Tensor, ok: torch.Tensor, n_edits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edit-level mean NLL (mean over its rows of each row's token mean) and all-tokens-correct."""
    dev = nll.device
    n_rows = sub.input_ids.shape[0]
    row_tok = torch.zeros(n_rows, device=dev).index_add_(0, sub.tok_row.to(dev), torch.ones_like(nll))
    row_nll = torch.zeros(n_rows, device=dev, dtype=nll.dtype).index_add_(0, sub.tok_row.to(dev), nll) / row_tok
    edit = sub.edit.to(dev)
    rows_per_edit = torch.zeros(n_edits, device=dev).index_add_(0, edit, torch.ones(n_rows, device=dev))
    edit_nll = torch.zeros(n_edits, device=dev, dtype=nll.dtype).index_add_(0, edit, row_nll)
    edit_nll = edit_nll / rows_per_edit.clamp(min=1)
    wrong = torch.zeros(n_edits, device=dev).index_add_(0, edit[sub.tok_row.to(dev)], (~ok).float())
    return edit_nll, wrong.eq(0)


def fit_neurons(
    lm: LoadedModel,
    requests: Sequence[EditRequest],
    spec: NeuronSpec,
    layer: int,
    *,
    lr: float = 0.1,
    max_steps: int = 100,
    nll_threshold: float = 0.1,
    batch_size: int = 64,
    context_prefixes: Sequence[str] = (),
    seed: int = 42,
    cache: FitCache | None = None,
    code: NeuronCode | None = None,
) -> FitResult:
    """Fit one neuron per request (same init for all, as in the official code), `batch_size` edits at a time.

    With a `code`, each neuron is fitted inside the code's fixed low-rank subspace: the optimised
    parameters are its code (starting at 0, the code's mean neuron) and the neuron is `code.decode(z)`,
    so the generator's targets are exact codes, not truncations (`FitResult.codes`).

    With a `cache`, each chunk's fit is looked up first and stored after (kebench.fit_cache):
    ablations that change only the generator or the gate refit nothing, and runs side by side
    split the chunks between them (claims)."""
    start = time.perf_counter()
    n = len(requests)
    init = spec.init_vector(lm.adapter.key_size, seed) if code is None else torch.zeros(code.size)
    vectors = init.repeat(n, 1)
    converged = torch.zeros(n, dtype=torch.bool)
    steps = torch.full((n,), max_steps, dtype=torch.long)
    nll_out, eff_out = torch.zeros(n), torch.zeros(n, dtype=torch.bool)
    base_nll, base_eff = torch.zeros(n), torch.zeros(n, dtype=torch.bool)
    chunks = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    neuron = DynamicNeuron(lm.adapter.mlp(layer), spec)
    cached_chunks, cached_seconds = 0, 0.0
    with frozen(lm.model), neuron, progress_bar("MeG: fitting neurons", max_steps * len(chunks)) as bar:
        def resolve(chunk: list[int], wait: bool) -> bool:
            """Fill one chunk from the cache or by fitting it; False if another process is fitting it."""
            nonlocal cached_chunks, cached_seconds
            rows = build_rows(lm.tokenizer, [requests[i] for i in chunk], context_prefixes)
            key = None
            if cache is not None:
                settings = {"layer": layer, "spec": dataclasses.asdict(spec), "lr": lr, "max_steps": max_steps,
                            "nll_threshold": nll_threshold, "n_edits": len(chunk)}
                tensors = {"init": init, **{f.name: getattr(rows, f.name) for f in dataclasses.fields(rows)}}
                if code is not None:
                    tensors.update({f"code.{k}": v for k, v in code.state_dict().items()})
                key = cache.key(settings, tensors)

            def fit() -> dict[str, torch.Tensor]:
                res = _fit_chunk(lm, rows, len(chunk), neuron, layer, init, lr, max_steps, nll_threshold, bar, code)
                return dict(zip(_CHUNK_FIELDS, res, strict=True))

            got = resolve_fit(cache, key, _CHUNK_FIELDS, fit, wait)
            if got is None:
                return False
            res = tuple(got.tensors[f] for f in _CHUNK_FIELDS)
            if got.cached:
                cached_chunks += 1
                cached_seconds += got.seconds
                bar.advance(max_steps)
            idx = torch.tensor(chunk)
            vectors[idx], converged[idx], steps[idx] = res[0], res[1], res[2]
            nll_out[idx], eff_out[idx], base_nll[idx], base_eff[idx] = res[3], res[4], res[5], res[6]
            return True

        # chunks another process has claimed are left to the end, then read once it has saved them
        for chunk in [c for c in chunks if not resolve(c, wait=False)]:
            resolve(chunk, wait=True)
    check_finite("MeG fitted neurons", vectors)
    codes = None
    if code is not None:
        codes, vectors = vectors, code.decode(vectors)
    return FitResult(
        vectors, converged, steps, nll_out, eff_out, base_nll, base_eff, time.perf_counter() - start,
        len(chunks), cached_chunks, cached_seconds, codes,
    )


_CHUNK_FIELDS = ("vectors", "converged", "steps", "nll", "efficacy", "baseline_nll", "baseline_efficacy")


def _fit_chunk(
    lm: LoadedModel,
    rows: _Rows,
    n: int,
    neuron: DynamicNeuron,
    layer: int,
    init: torch.Tensor,
    lr: float,
    max_steps: int,
    threshold: float,
    bar: object,
    code: NeuronCode | None = None,
) -> tuple[torch.Tensor, ...]:
    """Fit the `n` edits of `rows`; returns parameters (neurons, or codes with a `code`), converged, steps,
    final NLL/efficacy, baseline NLL/efficacy."""
    neurons = (lambda p: p) if code is None else (lambda p: code.decode(p))  # noqa: E731
    dev = lm.device
    scorer = _Scorer(lm, layer, neuron, rows)
    all_rows = torch.arange(rows.input_ids.shape[0])
    bare_rows = all_rows[rows.bare]
    with torch.no_grad():
        nll, ok, sub = scorer.score(bare_rows, None)
        base_nll, base_ok = _per_edit(sub, nll, ok, n)
    params = init.to(dev, torch.float32).repeat(n, 1)
    opt = RowAdam(params, lr)
    active = torch.ones(n, dtype=torch.bool)
    converged = torch.zeros(n, dtype=torch.bool)
    steps = torch.full((n,), max_steps, dtype=torch.long)
    for step in range(max_steps + 1):
        rows_now = all_rows[active[rows.edit]]
        leaf = params.detach().requires_grad_(True)
        nll, ok, sub = scorer.score(rows_now, neurons(leaf)[rows.edit[rows_now].to(dev)])
        edit_nll, edit_ok = _per_edit(sub, nll, ok, n)
        done = active & (edit_ok & edit_nll.lt(threshold)).cpu()
        converged |= done
        steps[done] = step
        active &= ~done
        if step == max_steps or not active.any():
            bar.advance(max_steps - step)
            break
        loss = edit_nll[active.to(dev)].sum()
        loss.backward()
        moving = torch.nonzero(active).squeeze(1).to(dev)
        opt.step(leaf.grad[moving], moving)
        bar.advance()
    with torch.no_grad():
        nll, ok, sub = scorer.score(bare_rows, neurons(params)[rows.edit[bare_rows].to(dev)])
        fin_nll, fin_ok = _per_edit(sub, nll, ok, n)
    return params.detach().float().cpu(), converged, steps, fin_nll.cpu(), fin_ok.cpu(), base_nll.cpu(), base_ok.cpu()



@torch.no_grad()
def evaluate_neurons(
    lm: LoadedModel, requests: Sequence[EditRequest], spec: NeuronSpec, layer: int, vectors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced check of given neurons (one per request; zeros = unit off): (efficacy bool [n], mean NLL [n])."""
    neuron = DynamicNeuron(lm.adapter.mlp(layer), spec)
    rows = build_rows(lm.tokenizer, requests)
    with frozen(lm.model), neuron:
        scorer = _Scorer(lm, layer, neuron, rows)
        nll, ok, sub = scorer.score(torch.arange(len(requests)), vectors.to(lm.device))
        edit_nll, edit_ok = _per_edit(sub, nll, ok, len(requests))
    return edit_ok.cpu(), edit_nll.cpu()
