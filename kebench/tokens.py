"""Tokenising prompt + target pairs the same way everywhere (fitting and scoring must agree)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


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


def target_ids(tokenizer, target: str) -> list[int]:
    """A target is scored as the tokens of " " + target, without special tokens."""
    return tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"]


def encode_prompt_targets(tokenizer, prompts: Sequence[str], targets: Sequence[str]) -> PromptTargetBatch:
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    rows, labels, plens = [], [], []
    for prompt, target in zip(prompts, targets):
        p = tokenizer(prompt)["input_ids"]
        t = target_ids(tokenizer, target)
        rows.append(p + t)
        labels.append([-100] * len(p) + t)
        plens.append(len(p))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labels)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        lab[i, : len(l)] = torch.tensor(l)
    return PromptTargetBatch(ids, mask, lab, plens)


def target_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over each row's target tokens (next-token shift applied); shape [batch]."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    logp = torch.log_softmax(shift_logits, dim=-1)
    tok = logp.gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(tok * mask).sum(1) / mask.sum(1).clamp(min=1)
