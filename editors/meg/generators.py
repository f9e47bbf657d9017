"""Neuron generators behind one interface: diffusion (MeG), kNN lookup (baseline), subject oracle (upper bound).

MEG.md §10.4 notes that the key baseline for the diffusion model is a plain lookup of the
stored vectors; all three map (query embedding, query text) -> neuron vector, so the
editor and its ablations share one code path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kebench.errors import ConfigError

from editors.meg.experts import ExpertMixture

GENERATORS = ("diffusion", "knn", "oracle")


class KnnGenerator:
    """The stored neuron of the nearest training condition (cosine on normalised embeddings)."""

    def __init__(self, bank: torch.Tensor, bank_edit: torch.Tensor, vectors: torch.Tensor) -> None:
        self.bank = torch.nn.functional.normalize(bank.float(), dim=-1)
        self.bank_edit = bank_edit.long()
        self.vectors = vectors.float()

    def nearest_edit(self, emb: torch.Tensor) -> torch.Tensor:
        sims = torch.nn.functional.normalize(emb.float(), dim=-1) @ self.bank.T
        return self.bank_edit[sims.argmax(-1)]

    def generate(self, emb: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.vectors[self.nearest_edit(emb)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank, "bank_edit": self.bank_edit, "vectors": self.vectors}


class SubjectOracle(KnnGenerator):
    """Upper bound on routing: the fitted neuron of the edit whose subject occurs in the prompt
    (longest subject wins; ties and subject-free prompts fall back to the nearest embedding).
    It uses the subject string, which a real generator never sees."""

    def __init__(self, bank: torch.Tensor, bank_edit: torch.Tensor, vectors: torch.Tensor, subjects: Sequence[str]):
        super().__init__(bank, bank_edit, vectors)
        self.subjects = [s.lower() for s in subjects]

    def generate(self, emb: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        fallback = self.nearest_edit(emb)
        sims = torch.nn.functional.normalize(emb.float(), dim=-1) @ self.bank.T
        picked = []
        for row, prompt in enumerate(prompts):
            low = prompt.lower()
            hits = [e for e, s in enumerate(self.subjects) if s and s in low]
            if not hits:
                picked.append(int(fallback[row]))
                continue
            longest = max(len(self.subjects[e]) for e in hits)
            hits = [e for e in hits if len(self.subjects[e]) == longest]
            if len(hits) == 1:
                picked.append(hits[0])
                continue
            mask = torch.isin(self.bank_edit, torch.tensor(hits))
            best = sims[row].masked_fill(~mask, float("-inf")).argmax()
            picked.append(int(self.bank_edit[best]))
        return self.vectors[torch.tensor(picked, dtype=torch.long)]


class DiffusionNeurons:
    """Adapter: the diffusion model (one denoiser, or experts behind a router) as a generator (text unused)."""

    def __init__(self, mixture: ExpertMixture) -> None:
        self.mixture = mixture

    def generate(self, emb: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.mixture.sample(emb)


def check_generator(name: str) -> str:
    if name not in GENERATORS:
        raise ConfigError(f"unknown MeG generator {name!r}; use one of {', '.join(GENERATORS)}")
    return name
