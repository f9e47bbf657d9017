"""FT-L: fine-tune one MLP output projection on the new targets under an L-inf norm constraint.

The constrained fine-tuning baseline of ROME/MEMIT: cheap, and a floor every locate-then-edit
method should beat on locality.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from kebench.data.case import EditRequest
from kebench.editor import EditHandle, Editor, HParams, WeightEditHandle, check_finite, register_editor
from kebench.models.loaded import LoadedModel
from kebench.progress import progress_bar
from kebench.hooks import block_list, capture_block_output, head_at, replay_from
from kebench.tokens import encode_prompt_targets


@dataclass(frozen=True)
class FTHParams(HParams):
    layers: tuple[int, ...] = (21,)
    lr: float = 5e-4
    steps: int = 25
    norm_constraint: float = 5e-4  # each weight stays within +-this of its original value
    batch_size: int = 32
    seed: int = 0


@register_editor
class FTEditor(Editor):
    name = "ft"
    hparams_cls = FTHParams
    config_dir = Path(__file__).parent / "configs"

    def apply(self, lm: LoadedModel, requests: Sequence[EditRequest]) -> EditHandle:
        hp: FTHParams = self.hparams  # type: ignore[assignment]
        names = [lm.adapter.mlp_out_param_name(layer) for layer in hp.layers]
        handle = WeightEditHandle(lm.model, names)
        params = dict(lm.model.named_parameters())
        weights = [params[n] for n in names]
        originals = [handle.originals[n] for n in names]
        for w in weights:
            w.requires_grad_(True)
        gen = torch.Generator().manual_seed(hp.seed)
        opt = torch.optim.Adam(weights, lr=hp.lr)
        batch = encode_prompt_targets(lm.tokenizer, [r.text for r in requests], [r.target_new for r in requests])
        batch = batch.to(lm.device)
        # Nothing below the lowest tuned layer changes: compute its input once and replay it.
        bottom = min(hp.layers)
        blocks, _ = block_list(lm.model, lm.adapter.layer_name(0))
        cached, tuple_out = (
            capture_block_output(
                lm.model, blocks, bottom - 1, input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            )
            if bottom > 0
            else (None, False)
        )
        n = len(requests)
        t0 = time.perf_counter()
        losses: list[float] = []
        try:
            with progress_bar("ft: fine-tuning", hp.steps) as bar:
                for _ in range(hp.steps):
                    order = torch.randperm(n, generator=gen)
                    total = 0.0
                    for start in range(0, n, hp.batch_size):
                        idx = order[start : start + hp.batch_size].to(lm.device)
                        opt.zero_grad(set_to_none=True)
                        loss = self._loss(lm, batch, idx, blocks, bottom, cached, tuple_out)
                        check_finite("ft loss", loss)
                        loss.backward()
                        opt.step()
                        with torch.no_grad():  # project back into the L-inf ball around the original weights
                            for w, w0 in zip(weights, originals):
                                w.copy_(torch.clamp(w, w0 - hp.norm_constraint, w0 + hp.norm_constraint))
                        total += float(loss.detach()) * len(idx)
                    losses.append(total / n)
                    bar.advance()
        finally:
            for w in weights:
                w.requires_grad_(False)
                w.grad = None
        handle.stats = {"loss_first": losses[0], "loss_last": losses[-1], "fit_seconds": time.perf_counter() - t0}
        return handle

    @staticmethod
    def _loss(lm, batch, idx, blocks, bottom, cached, tuple_out) -> torch.Tensor:
        """Mean target NLL of rows `idx`, running only the blocks from `bottom` up and the LM head
        only at positions that predict a target token."""
        labels = batch.labels[idx]
        rows, cols = torch.nonzero(labels[:, 1:] != -100, as_tuple=True)
        inputs = {"input_ids": batch.input_ids[idx], "attention_mask": batch.attention_mask[idx]}
        with head_at(lm.model, rows, cols):
            if cached is None:
                logits = lm.model(**inputs, use_cache=False).logits
            else:
                with replay_from(blocks, bottom - 1, lambda: cached[idx], tuple_out):
                    logits = lm.model(**inputs, use_cache=False).logits
        nll = torch.nn.functional.cross_entropy(logits.float(), labels[rows, cols + 1], reduction="none")
        per_row = torch.zeros(len(idx), device=nll.device).index_add(0, rows, nll)
        counts = torch.zeros(len(idx), device=nll.device).index_add(0, rows, torch.ones_like(nll))
        return (per_row / counts.clamp(min=1)).mean()
