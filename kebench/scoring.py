"""Batched, padding-aware model queries that every metric is built on.

Two primitives:

- `score_targets`: teacher-forced log-probabilities of a target after a prompt (CounterFact
  probabilities, ZsRE token accuracy). Scoring uses RIGHT padding, so every example's tokens
  sit at positions 0..len-1 exactly as when run alone.
- `greedy_generate`: greedy continuations (exact match, fluency, MQuAKE). Generation uses
  LEFT padding, so every example's next token comes from the last column.

Padding is done by hand from per-example token ids instead of through the tokenizer's
`padding_side`, so the shared tokenizer is never mutated and a tokenizer without a pad
token still works (padded positions are masked, their id does not matter).

Both take an optional `condition(prompts)` context manager, entered around each forward
with that batch's prompt strings: query-dependent editors (MeG) decide per batch what to
write into the model (`EditHandle.conditioning`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from kebench.errors import ModelError
from kebench.tokens import encode_prompt, encode_target, pad_left, pad_right
from kebench.models.loaded import LoadedModel

Condition = Callable[[Sequence[str]], AbstractContextManager[Any]]


@dataclass(frozen=True)
class TargetScore:
    """Teacher-forced result for one (prompt, target) pair, one entry per target token.

    `token_predicted` is the model's argmax at each target position (ZsRE locality compares
    these before and after an edit); `token_correct[i]` is `token_predicted[i] == target[i]`.
    """

    token_logprobs: list[float]
    token_correct: list[bool]
    token_predicted: list[int]

    @property
    def nll(self) -> float:
        """Mean per-token negative log-likelihood (ROME/MEMIT's length-normalised NLL)."""
        return -sum(self.token_logprobs) / len(self.token_logprobs)

    @property
    def accuracy(self) -> float:
        """Fraction of target tokens the model predicts under teacher forcing."""
        return sum(self.token_correct) / len(self.token_correct)


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0  # only ever sits under attention_mask == 0


def _condition(condition: Condition | None, prompts: Sequence[str]) -> AbstractContextManager[Any]:
    return contextlib.nullcontext() if condition is None else condition(list(prompts))


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module):
    """No gradients and no dropout while measuring, whatever mode an editor left the model in.

    `no_grad` rather than `inference_mode`: tensors a conditioning editor creates here may
    later be used where autograd is on, which inference tensors forbid.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _by_length(lengths: Sequence[int]) -> list[int]:
    """Indices longest first, so each batch holds similar lengths (little padding)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


@contextlib.contextmanager
def _only_positions(head: torch.nn.Module, positions: torch.Tensor):
    """Make the LM head see only the hidden states at `positions` [B, K].

    The vocabulary projection is the widest matmul of a small model; projecting only the
    target positions saves most of it. A pre-hook keeps whatever the model does after the
    head (logit soft-capping, scaling) intact.
    """

    def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        return (hidden[rows, positions.to(hidden.device)],) + tuple(args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def score_targets(
    lm: LoadedModel,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 32,
    condition: Condition | None = None,
) -> list[TargetScore]:
    """Teacher-forced log-probability and argmax of each target token after its prompt.

    Sequence i is prompt_ids(i) + target_ids(i); the logits at position len(prompt)-1+k predict
    target token k. Results come back in input order, one per pair.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"score_targets got {len(prompts)} prompts but {len(targets)} targets")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tok, model = lm.tokenizer, lm.model
    encoded = [(encode_prompt(tok, p), encode_target(tok, t)) for p, t in zip(prompts, targets)]
    order = _by_length([len(p) + len(t) for p, t in encoded])
    results: list[TargetScore | None] = [None] * len(encoded)
    head = model.get_output_embeddings()
    device, pad = lm.device, _pad_id(tok)

    with _evaluating(model):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            seqs = [encoded[i][0] + encoded[i][1] for i in batch]
            k_max = max(len(encoded[i][1]) for i in batch)
            input_ids, attention = pad_right(seqs, pad)
            positions = torch.zeros((len(batch), k_max), dtype=torch.long)
            target_ids = torch.zeros((len(batch), k_max), dtype=torch.long)
            for row, i in enumerate(batch):
                prompt_ids, tgt = encoded[i]
                positions[row, : len(tgt)] = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(tgt))
                target_ids[row, : len(tgt)] = torch.tensor(tgt)
            input_ids, attention = input_ids.to(device), attention.to(device)

            with _condition(condition, [prompts[i] for i in batch]):
                if head is not None:
                    with _only_positions(head, positions):
                        logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
                else:  # no separable head: project everything, then pick the positions
                    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
                    rows = torch.arange(len(batch), device=logits.device)[:, None]
                    logits = logits[rows, positions.to(logits.device)]
            if tuple(logits.shape[:2]) != (len(batch), k_max):
                raise ModelError(
                    f"{type(model).__name__} did not route its output through get_output_embeddings(): "
                    f"got logits of shape {tuple(logits.shape)}; kebench cannot score this model"
                )
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            target_ids = target_ids.to(logprobs.device)
            picked = logprobs.gather(-1, target_ids[..., None]).squeeze(-1).cpu()
            predicted = logprobs.argmax(-1).cpu()
            target_ids = target_ids.cpu()
            for row, i in enumerate(batch):
                n = len(encoded[i][1])
                lp = picked[row, :n].tolist()
                if not all(math.isfinite(x) for x in lp):
                    raise ModelError(f"non-finite log-probability scoring {targets[i]!r} after {prompts[i]!r}")
                pred = predicted[row, :n].tolist()
                results[i] = TargetScore(lp, [p == t for p, t in zip(pred, target_ids[row, :n].tolist())], pred)

    assert all(r is not None for r in results) and len(results) == len(prompts)
    return results  # type: ignore[return-value]


def _generation_config(model: torch.nn.Module, tokenizer: Any, max_new_tokens: int, pad: int) -> Any:
    """The model's own generation config (keeps its EOS) with greedy decoding forced."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.temperature = None
    config.top_p = None
    config.top_k = None
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    config.pad_token_id = pad
    if config.eos_token_id is None and getattr(tokenizer, "eos_token_id", None) is not None:
        config.eos_token_id = tokenizer.eos_token_id
    return config


def _first_line(text: str) -> str:
    """The text up to its first newline, ignoring newlines before any content (see kebench.metrics.text)."""
    return text.lstrip().split("\n", 1)[0]


class AnswerLineEnd(StoppingCriteria):
    """Per row: done once the new text has a newline after some content (the answer line is complete)."""

    def __init__(self, tokenizer: Any, width: int) -> None:
        self.tokenizer, self.width = tokenizer, width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        return torch.tensor(["\n" in t.lstrip() for t in texts], dtype=torch.bool, device=input_ids.device)


def greedy_generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 20,
    batch_size: int = 32,
    condition: Condition | None = None,
    encoded: Sequence[list[int]] | None = None,
    asked: Sequence[str] | None = None,
    answer_line: bool = False,
) -> list[str]:
    """Greedy continuation of each prompt (new tokens only, special tokens dropped), in input order.

    `encoded`: the prompts' ids when they are not the plain encoding (a chat template); `asked`: the text
    `condition` receives per prompt when it is not the prompt (the question inside a few-shot prompt);
    `answer_line`: each row stops at the end of its first line, and that line is returned."""
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
    if asked is not None and len(asked) != len(prompts):
        raise ValueError(f"greedy_generate needs one asked text per prompt, got {len(asked)} for {len(prompts)}")
    tok, model = lm.tokenizer, lm.model
    encoded = list(encoded) if encoded is not None else [encode_prompt(tok, p) for p in prompts]
    asked = asked if asked is not None else prompts
    order = _by_length([len(e) for e in encoded])
    pad = _pad_id(tok)
    config = _generation_config(model, tok, max_new_tokens, pad)
    results: list[str | None] = [None] * len(encoded)

    with _evaluating(model):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            input_ids, attention = pad_left([encoded[i] for i in batch], pad)
            width = input_ids.shape[1]
            stop = StoppingCriteriaList([AnswerLineEnd(tok, width)]) if answer_line else None
            with _condition(condition, [asked[i] for i in batch]):
                out = model.generate(
                    input_ids=input_ids.to(lm.device),
                    attention_mask=attention.to(lm.device),
                    generation_config=config,
                    stopping_criteria=stop,
                )
            texts = tok.batch_decode(out[:, width:].cpu(), skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for row, i in enumerate(batch):
                results[i] = _first_line(texts[row]) if answer_line else texts[row]

    assert all(r is not None for r in results) and len(results) == len(prompts)
    return results  # type: ignore[return-value]
