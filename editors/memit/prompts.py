"""Token rows for a set of edits: each edit's prompt under every context prefix (+ a KL prompt).

Where the subject ends is found by tokenising the text *up to the end of the subject* and
taking its last token; searching the subject's tokens inside the full prompt fails when
tokenisation merges across the boundary. An empty subject puts the lookup at the prompt's
last token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kebench.data.case import EditRequest
from kebench.scoring import encode_prompt, encode_target
from kebench.tokens import pad_right

KL_PROMPT = "{} is a"  # MEMIT's essence prompt: what the subject "is" should not drift


def subject_last_index(tokenizer, prefix: str, prompt: str, subject: str) -> int:
    """Index of the subject's last token in `prefix + prompt` with "{}" filled by `subject`."""
    filled = prefix + prompt.replace("{}", subject)
    if not subject:
        return len(encode_prompt(tokenizer, filled)) - 1
    upto = prefix + prompt[: prompt.index("{}")] + subject
    return min(len(encode_prompt(tokenizer, upto)), len(encode_prompt(tokenizer, filled))) - 1


@dataclass
class EditBatch:
    """Right-padded rows for `n_edits` edits.

    Rewrite rows are prefix + prompt + target[:-1] (teacher-forced target); KL rows are
    "{subject} is a". `lookup` is the subject's last token in each row, where keys are read
    and the residual delta is added. Target positions are flat (row, col, token id) lists.
    `weight` is each rewrite row's share in its edit's averaged key and residual (KL rows: 0).
    """

    input_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor  # [R, T]
    edit: torch.Tensor  # [R] edit index of the row
    lookup: torch.Tensor  # [R]
    last: torch.Tensor  # [R] last real token
    is_kl: torch.Tensor  # [R] bool
    weight: torch.Tensor  # [R] float64, sums to 1 over each edit's rewrite rows
    tgt_row: torch.Tensor  # [M]
    tgt_col: torch.Tensor  # [M]
    tgt_id: torch.Tensor  # [M]
    n_edits: int

    @property
    def rewrite_rows(self) -> torch.Tensor:
        return (~self.is_kl).nonzero().squeeze(1)

    @property
    def kl_rows(self) -> torch.Tensor:
        return self.is_kl.nonzero().squeeze(1)

    def n_target_tokens(self) -> torch.Tensor:
        """Target length of each edit (same under every prefix)."""
        per_row = torch.bincount(self.tgt_row, minlength=len(self.edit))
        out = torch.zeros(self.n_edits, dtype=torch.long)
        out[self.edit] = per_row
        return out

    def rows_of(self, edits: torch.Tensor) -> torch.Tensor:
        """Indices of the rows (rewrite and KL) belonging to `edits`, in row order."""
        member = torch.zeros(self.n_edits, dtype=torch.bool)
        member[edits] = True
        return member[self.edit].nonzero().squeeze(1)

    def select(self, edits: torch.Tensor) -> "EditBatch":
        """The rows of `edits` only (see `rows_of`), edit indices renumbered 0..len(edits)-1
        in the order of `edits`, padding trimmed to the longest kept row."""
        remap = torch.full((self.n_edits,), -1, dtype=torch.long)
        remap[edits] = torch.arange(len(edits))
        rows = self.rows_of(edits)
        row_map = torch.full((len(self.edit),), -1, dtype=torch.long)
        row_map[rows] = torch.arange(len(rows))
        keep = row_map[self.tgt_row] >= 0
        width = int(self.last[rows].max()) + 1
        return EditBatch(
            self.input_ids[rows, :width], self.attention_mask[rows, :width], remap[self.edit[rows]],
            self.lookup[rows], self.last[rows], self.is_kl[rows], self.weight[rows],
            row_map[self.tgt_row[keep]], self.tgt_col[keep], self.tgt_id[keep], len(edits),
        )


def prefix_weights(prefixes: Sequence[str]) -> list[float]:
    """MEMIT's averaging over context types: the bare prompt ("") carries half the weight and
    the prefixed versions share the other half; without a bare prompt all weigh the same.

    Evaluation asks the bare prompt, so it must not be outvoted by the prefixed versions
    (with a uniform mean, edits whose subject opens the prompt failed there)."""
    n = len(prefixes)
    if "" not in prefixes or n == 1:
        return [1.0 / n] * n
    return [0.5 if p == "" else 0.5 / (n - 1) for p in prefixes]


def build_batch(
    tokenizer,
    requests: Sequence[EditRequest],
    prefixes: Sequence[str],
    *,
    with_targets: bool = True,
    kl_prompt: str | None = KL_PROMPT,
) -> EditBatch:
    """Rows for every (request, prefix), then one KL row per request with a subject.

    `with_targets=False` gives prompt-only rows (enough for reading keys and residuals).
    """
    if len(set(prefixes)) != len(prefixes) or not prefixes:
        raise ValueError(f"prefixes must be distinct and non-empty, got {list(prefixes)}")
    rows: list[list[int]] = []
    edit, lookup, is_kl, weight, t_row, t_col, t_id = [], [], [], [], [], [], []
    shares = prefix_weights(prefixes)
    for e, req in enumerate(requests):
        target = encode_target(tokenizer, req.target_new) if with_targets else []
        for prefix, share in zip(prefixes, shares):
            ids = encode_prompt(tokenizer, prefix + req.text)
            for j, tid in enumerate(target):
                t_row.append(len(rows))
                t_col.append(len(ids) - 1 + j)
                t_id.append(tid)
            rows.append(ids + target[:-1])
            edit.append(e)
            lookup.append(subject_last_index(tokenizer, prefix, req.prompt, req.subject))
            is_kl.append(False)
            weight.append(share)
    if with_targets and kl_prompt is not None:
        for e, req in enumerate(requests):
            if not req.subject:
                continue  # "{} is a" says nothing without a subject
            rows.append(encode_prompt(tokenizer, kl_prompt.replace("{}", req.subject)))
            edit.append(e)
            lookup.append(subject_last_index(tokenizer, "", kl_prompt, req.subject))
            is_kl.append(True)
            weight.append(0.0)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)  # masked anyway
    input_ids, mask = pad_right(rows, pad_id)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return EditBatch(
        input_ids, mask, as_long(edit), as_long(lookup), as_long([len(r) - 1 for r in rows]),
        torch.tensor(is_kl, dtype=torch.bool), torch.tensor(weight, dtype=torch.float64), as_long(t_row), as_long(t_col), as_long(t_id), len(requests),
    )
