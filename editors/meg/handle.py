"""The MeG edit handle: per batch of prompts, gate -> generate -> write each row's neuron.

Nothing in the model changes; `conditioning(prompts)` sets the hook's per-row neurons for
one forward/generate call and `restore()` removes the hook, after which the model is
bit-identical to the unedited one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch

from kebench.editor import EditHandle

from editors.meg.encoder import QueryEncoder
from editors.meg.familiarity import FamiliarityNet, SimilarityGate
from editors.meg.neuron import DynamicNeuron


class NeuronGenerator(Protocol):
    def generate(self, emb: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor: ...


class MeGHandle(EditHandle):
    """Query-dependent edit: the neuron each prompt gets is decided (and cached) per distinct prompt."""

    def __init__(
        self,
        neuron: DynamicNeuron,
        encoder: QueryEncoder,
        familiarity: FamiliarityNet | SimilarityGate | None,
        tau: float | None,
        generator: NeuronGenerator,
        stats: dict[str, Any] | None = None,
        batch_size: int = 128,
    ) -> None:
        self.neuron = neuron.attach()
        self.encoder = encoder
        self.familiarity = familiarity
        self.tau = tau
        self.generator = generator
        self.stats = stats or {}
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor | None] = {}  # None = gate closed (all-zero neuron)
        self.prompts_seen = 0
        self.prompts_fired = 0

    def fires(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fire mask, gate score) for normalised query embeddings; without a gate every query fires."""
        if self.familiarity is None or self.tau is None:
            return torch.ones(len(emb), dtype=torch.bool), torch.zeros(len(emb))
        score = self.familiarity.score(emb)
        return score < self.tau, score

    def _decide(self, prompts: Sequence[str]) -> None:
        new = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if not new:
            return
        emb = self.encoder.encode(new, batch_size=self.batch_size)
        fire, _ = self.fires(emb)
        for p in new:
            self._cache[p] = None
        idx = torch.nonzero(fire).squeeze(1)
        if len(idx):
            vectors = self.generator.generate(emb[idx], [new[i] for i in idx.tolist()])
            for row, i in enumerate(idx.tolist()):
                self._cache[new[i]] = vectors[row].float().cpu()

    def vectors_for(self, prompts: Sequence[str]) -> torch.Tensor:
        """One neuron per prompt ([B, size]; zeros where the gate stays closed)."""
        self._decide(prompts)
        out = torch.zeros(len(prompts), self.neuron.spec.size)
        for row, p in enumerate(prompts):
            vec = self._cache[p]
            if vec is not None:
                out[row] = vec
        self.prompts_seen += len(prompts)
        self.prompts_fired += sum(self._cache[p] is not None for p in prompts)
        return out

    @contextlib.contextmanager
    def conditioning(self, prompts: Sequence[str]) -> Iterator[None]:
        if not self.neuron.attached:
            yield  # restored: the model is unedited
            return
        vectors = self.vectors_for(prompts)
        device = next(self.neuron.mlp.parameters()).device
        with self.neuron.vectors(vectors.to(device)):
            yield

    def restore(self) -> None:
        self.neuron.detach()

    def edited_state(self) -> dict[str, torch.Tensor]:
        return {}  # no weight changes; MeGEditor.save_edits writes the generator instead
