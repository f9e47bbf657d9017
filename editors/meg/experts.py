"""MeG's diffusion generator as a mixture of experts: the edits clustered by their query embedding (spherical
k-means), one denoiser per cluster, and each query sampled by the expert of its nearest centroid.

Why: a denoiser must reproduce its edits' neurons from their queries, a table of edits × code-size numbers, and
one dense denoiser costs per training sample what it holds. At 10,000 CounterFact edits one width-256 denoiser
(2.9M parameters, 4.6 per number, 600 samples per edit, 37 min on one CPU thread) generated neurons at a median
relative error of 0.39 against their fitted ones (its selection check on 512 edits). Ten experts of ~1,000 edits
(width 64 each, 5.7M parameters in all, the same 600 samples per edit) reach 0.065 in 15 min
(results/benchmarks/meg_generator_sweep_n10000.json): capacity follows the edit count while a training step costs
what one small denoiser costs.

The router is fixed before training (the centroids of the edits' bare queries); every training condition of an
edit (its augmented prefixes, noisy copies) trains that edit's expert. `router_agreement` is the share of those
conditions whose nearest centroid is their edit's: a paraphrase routed elsewhere gets another expert's neuron.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from editors.meg.code import NeuronCode
from editors.meg.denoiser import count_parameters
from editors.meg.diffusion import DiffusionGenerator, first_conditions

if TYPE_CHECKING:
    from editors.meg.config import MeGHParams
    from kebench.fit_cache import FitCache


def expert_count(n_edits: int, edits_per_expert: int) -> int:
    """Experts for `n_edits` edits: one per `edits_per_expert` (rounded up); 0 = one denoiser for all."""
    return 1 if edits_per_expert <= 0 else max(1, math.ceil(n_edits / edits_per_expert))


def spherical_kmeans(x: torch.Tensor, k: int, seed: int, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids [k, d] (unit norm) and each row's cluster [n] of the rows of `x` by cosine, k-means++ seeded by
    `seed`. A cluster left empty takes the row farthest from its centroid."""
    x = nn.functional.normalize(x.float(), dim=-1)
    n = len(x)
    if k <= 1 or n <= k:
        k = min(max(k, 1), n)
        return (x[:k].clone(), torch.arange(n) % k) if k > 1 else (nn.functional.normalize(x.mean(0, keepdim=True), dim=-1), torch.zeros(n, dtype=torch.long))
    gen = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(0, n, (1,), generator=gen)]
    for _ in range(k - 1):
        far = (1 - (x @ centroids.T).max(-1).values).clamp(min=0) ** 2
        centroids = torch.cat([centroids, x[torch.multinomial(far + 1e-12, 1, generator=gen)]])
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        sims = x @ centroids.T
        assign = sims.argmax(-1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        for j in torch.nonzero(counts == 0).flatten().tolist():  # an empty cluster restarts at the worst-fitted row
            worst = int(sims.max(-1).values.argmin())
            sums[j], assign[worst] = x[worst], j
        moved = nn.functional.normalize(sums, dim=-1)
        if torch.allclose(moved, centroids, atol=1e-6):
            break
        centroids = moved
    return centroids, (x @ centroids.T).argmax(-1)


class ExpertMixture:
    """Diffusion experts behind a nearest-centroid router; one expert is the plain diffusion generator."""

    def __init__(self, experts: Sequence[DiffusionGenerator], centroids: torch.Tensor | None = None) -> None:
        if len(experts) > 1 and (centroids is None or len(centroids) != len(experts)):
            raise ValueError(f"{len(experts)} experts need as many centroids")
        self.experts = list(experts)
        self.centroids = None if len(self.experts) == 1 else nn.functional.normalize(centroids.float(), dim=-1)

    def route(self, emb: torch.Tensor) -> torch.Tensor:
        """Each query's expert: the nearest centroid by cosine."""
        if self.centroids is None:
            return torch.zeros(len(emb), dtype=torch.long)
        return (nn.functional.normalize(emb.float(), dim=-1) @ self.centroids.to(emb.device).T).argmax(-1).cpu()

    @torch.no_grad()
    def sample(self, emb: torch.Tensor) -> torch.Tensor:
        if len(self.experts) == 1:
            return self.experts[0].sample(emb)
        route = self.route(emb)
        out = torch.zeros(len(emb), self.experts[0].code.mean.shape[0])
        for j in route.unique().tolist():
            rows = route == j
            out[rows] = self.experts[j].sample(emb[rows.to(emb.device)])
        return out

    def to(self, device: torch.device | str) -> ExpertMixture:
        for e in self.experts:
            e.to(device)
        return self

    # persistence: one expert keeps the plain generator's format ----------------------------------------
    def config(self) -> dict[str, object]:
        return self.experts[0].config() if len(self.experts) == 1 else {"experts": [e.config() for e in self.experts]}

    def state_dict(self) -> dict[str, torch.Tensor]:
        if len(self.experts) == 1:
            return self.experts[0].state_dict()
        # the experts share one neuron code: stored once
        state = {k: v for k, v in self.experts[0].state_dict().items() if k.startswith("code.")}
        state["router.centroids"] = self.centroids.detach().cpu().contiguous()
        for j, e in enumerate(self.experts):
            state.update({f"expert{j}.{k}": v for k, v in e.state_dict().items() if k.startswith("model.")})
        return state

    @classmethod
    def from_state(cls, config: dict, state: dict[str, torch.Tensor]) -> ExpertMixture:
        if "experts" not in config:
            return cls([DiffusionGenerator.from_state(config, state)])
        experts, code = [], {k: v for k, v in state.items() if k.startswith("code.")}
        for j, cfg in enumerate(config["experts"]):
            prefix = f"expert{j}."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            experts.append(DiffusionGenerator.from_state(cfg, {**own, **code}))
        return cls(experts, state["router.centroids"])


def _label(j: int, k: int) -> str:
    return "MeG: training the generator" + (f" (expert {j + 1}/{k})" if k > 1 else "")


def train_experts(
    hp: MeGHParams, vectors: torch.Tensor, code: NeuronCode, cond: torch.Tensor, cond_edit: torch.Tensor, sized: int,
    device: torch.device, cond_noise: float = 0.0, cache: FitCache | None = None,
) -> tuple[ExpertMixture, dict[str, Any]]:
    """The generator of MeG's `hp` for these pairs (`cond_edit` indexes `vectors`): `expert_count(sized)` experts over
    k-means clusters of the edits' bare queries, each denoiser sized for its share of `sized` edits (a growing
    sequence's total) and trained, or read from `cache`, on its edits' pairs."""
    n = len(vectors)
    first = first_conditions(cond_edit)
    edit_ids = cond_edit[first]  # ascending: first_conditions goes by edit
    k = expert_count(sized, hp.generator.edits_per_expert)
    if k > 1:
        centroids, owner = spherical_kmeans(cond[first], k, hp.seed)
    else:
        centroids, owner = None, torch.zeros(len(first), dtype=torch.long)
    experts, parts, sizes = [], [], []
    for j in range(k):
        edits = edit_ids[owner == j]
        rows, local = expert_part(cond_edit, edits, n)
        expert, part = _train_expert(hp, vectors[edits], code, cond[rows], local, max(1, round(len(edits) * sized / len(first))),
                                     device, cond_noise, cache, _label(j, k))
        experts.append(expert)
        parts.append(part)
        sizes.append(len(edits))
    mixture = ExpertMixture(experts, centroids)
    stats = merge_expert_stats(parts, sizes)
    stats["diffusion_experts"] = k
    if k > 1:
        stats["diffusion_expert_edits"] = [min(sizes), max(sizes)]
        # the share of training conditions (augmented prefixes included) the router sends to their edit's expert
        routed = mixture.route(cond) == owner[torch.searchsorted(edit_ids, cond_edit)]
        stats["diffusion_router_agreement"] = float(routed.float().mean())
    visits = sum(e.settings.steps * e.settings.batch_size for e in experts) / max(1, len(first))
    stats.update(capacity(mixture, n, visits))
    return mixture, stats


def continue_experts(
    hp: MeGHParams, mixture: ExpertMixture, vectors: torch.Tensor, cond: torch.Tensor, cond_edit: torch.Tensor,
    focus: torch.Tensor, focus_share: float,
) -> dict[str, Any]:
    """Continue training `mixture` on every edit so far (`cond_edit` indexes `vectors`), `focus_share` of each batch on
    the `focus` conditions (the new edits'), until each new edit has had `generator.visits` samples (steps follow the
    new edits, not the total). Each new edit joins the expert of its nearest centroid (the router stays as it was
    built) and only the experts that got new edits train."""
    n_all = len(vectors)
    first = first_conditions(cond_edit)
    edit_ids, owner = cond_edit[first], mixture.route(cond[first])
    new_edit = torch.zeros(n_all, dtype=torch.bool)
    new_edit[cond_edit[focus]] = True
    g, k = hp.generator, len(mixture.experts)
    parts, sizes, visits = [], [], []
    t0 = time.perf_counter()
    for j, expert in enumerate(mixture.experts):
        edits = edit_ids[owner == j]
        fresh = int(new_edit[edits].sum())
        if fresh == 0:
            continue
        rows, local = expert_part(cond_edit, edits, n_all)
        steps = g.steps or max(100, math.ceil(g.visits * fresh / (g.batch_size * focus_share)))
        expert.settings = dataclasses.replace(expert.settings, steps=steps, select_every=g.select_every or max(1, steps // 5))
        parts.append(expert.fit(vectors[edits], cond[rows], local, focus=focus[rows], focus_share=focus_share, label=_label(j, k)))
        sizes.append(fresh)
        visits.append(steps * g.batch_size * focus_share / fresh)
    stats = merge_expert_stats(parts, sizes)
    stats["diffusion_train_seconds"] = time.perf_counter() - t0
    stats.update(capacity(mixture, n_all, sum(v * n for v, n in zip(visits, sizes)) / max(1, sum(sizes))))
    stats["diffusion_continued"] = True
    return stats


def _train_expert(
    hp: MeGHParams, vectors: torch.Tensor, code: NeuronCode, cond: torch.Tensor, cond_edit: torch.Tensor, sized: int,
    device: torch.device, cond_noise: float, cache: FitCache | None, label: str,
) -> tuple[DiffusionGenerator, dict[str, Any]]:
    """One denoiser trained on these edits' pairs (or read from `cache`): sized for `sized` edits, its schedule
    following the edits it has."""
    cfg = hp.denoiser_config(sized, code.size, cond.shape[1])
    settings = hp.diffusion_settings(len(vectors), cond_noise)
    model = DiffusionGenerator(cfg, settings, code).to(device)
    key = found = None
    if cache is not None:  # the training pairs, the code and the settings determine the trained denoiser
        tensors = {"vectors": vectors, "conditions": cond, "condition_edit": cond_edit,
                   **{f"code.{k}": v for k, v in code.state_dict().items()}}
        key = cache.key(model.config(), tensors)
        found = cache.load(key)
    if found is not None:
        meta = found.pop("meta")
        return DiffusionGenerator.from_state(meta["config"], found).to(device), {**meta["stats"], "diffusion_from_cache": True}
    t0 = time.perf_counter()
    # beside the cache entry: a long training checkpoints there and an interrupted run resumes it
    partial = cache.path(key).with_suffix(".partial.pt") if cache is not None else None
    stats = model.fit(vectors, cond, cond_edit, checkpoint=partial, label=label)
    stats["diffusion_train_seconds"] = time.perf_counter() - t0  # kept with a cached generator
    if cache is not None:
        cache.save(key, model.state_dict(), {"config": model.config(), "stats": stats})
    return model, stats


def expert_part(cond_edit: torch.Tensor, edits: torch.Tensor, n_all: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The condition rows of `edits` (edit ids into the full table of `n_all`) and their edit ids renumbered 0..len-1."""
    local = torch.full((n_all,), -1, dtype=torch.long)
    local[edits] = torch.arange(len(edits))
    rows = local[cond_edit] >= 0
    return rows, local[cond_edit[rows]]


def merge_expert_stats(parts: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """One generator's stats from its experts': sums of time and steps, edit-weighted means of losses and errors."""
    if len(parts) == 1:
        return parts[0]
    total = sum(sizes)
    mean = lambda key: sum(p[key] * n for p, n in zip(parts, sizes)) / total  # noqa: E731
    return {
        "diffusion_loss_first": mean("diffusion_loss_first"), "diffusion_loss_last": mean("diffusion_loss_last"),
        "diffusion_selection_error": mean("diffusion_selection_error"),
        "diffusion_expert_selection_errors": [round(p["diffusion_selection_error"], 4) for p in parts],
        "diffusion_train_pairs": sum(p["diffusion_train_pairs"] for p in parts),
        "diffusion_steps": sum(p["diffusion_steps"] for p in parts),
        "diffusion_train_seconds": sum(p.get("diffusion_train_seconds", 0.0) for p in parts),
        "diffusion_from_cache": all(p.get("diffusion_from_cache", False) for p in parts),
    }



def capacity(mixture: ExpertMixture, n_edits: int, visits_per_edit: float) -> dict[str, float]:
    """The denoisers' size against the numbers they must reproduce (each edit's code), and the samples each edit got."""
    params = sum(count_parameters(e.model) for e in mixture.experts)
    return {"diffusion_params": params, "diffusion_params_per_number": params / (n_edits * mixture.experts[0].code.size),
            "diffusion_visits_per_edit": visits_per_edit}


