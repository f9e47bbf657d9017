"""Tokenising prompt + target pairs the same way everywhere (fitting and scoring must agree)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass

import torch

from kebench.errors import DataError


@dataclass
class PromptTargetBatch:
    """Right-padded prompt+target ids; `labels` is -100 except on target tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompt_lengths: list[int]

    def to(self, device: torch.device | str) -> "PromptTargetBatch":
        return PromptTargetBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.prompt_lengths
        )


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids with the tokenizer's default special tokens (BOS where the model uses one)."""
    ids = list(tokenizer(prompt)["input_ids"])
    if not ids:
        raise DataError(f"prompt {prompt!r} tokenizes to nothing: give a non-empty prompt")
    return ids


def encode_target(tokenizer: Any, target: str) -> list[int]:
    """Target ids as scored everywhere in kebench: " " + target, no special tokens."""
    ids = list(tokenizer(" " + target, add_special_tokens=False)["input_ids"])
    if not target.strip() or not ids:
        raise DataError(f"target {target!r} is empty: every probe needs a non-empty answer")
    return ids


def encode_prompt_targets(tokenizer, prompts: Sequence[str], targets: Sequence[str]) -> PromptTargetBatch:
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    rows, labels, plens = [], [], []
    for prompt, target in zip(prompts, targets):
        p = encode_prompt(tokenizer, prompt)
        t = encode_target(tokenizer, target)
        rows.append(p + t)
        labels.append([-100] * len(p) + t)
        plens.append(len(p))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = pad_right(rows, pad)
    lab, _ = pad_right(labels, -100)
    return PromptTargetBatch(ids, mask, lab, plens)


def pad_right(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows -> (ids [n, width] right-padded with `pad`, attention mask).

    Scoring and fitting pad right: each row's tokens keep the positions they have alone."""
    return _pad(rows, pad, left=False)


def pad_left(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows -> (ids [n, width] left-padded with `pad`, attention mask).

    Generation pads left: every row's next token is predicted from the last column."""
    return _pad(rows, pad, left=True)


def _pad(rows: Sequence[Sequence[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols] = torch.as_tensor(r, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask
