"""MeG's generator as experts behind a router: k-means over the edits' queries, one denoiser per cluster, each query
sampled by its nearest centroid's expert; exact persistence, and one expert is the plain generator."""

from __future__ import annotations

import pytest
import torch

from editors.meg.code import NeuronCode, relative_error
from editors.meg.config import MeGHParams
from editors.meg.diffusion import DiffusionGenerator
from editors.meg.experts import ExpertMixture, expert_count, spherical_kmeans, train_experts
from kebench.config import from_dict
from kebench.errors import ConfigError


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/editors/conftest.py


def _groups(groups: int = 2, per_group: int = 3, dim: int = 40, cond: int = 16, copies: int = 8):
    """`groups` far-apart directions of query embeddings, `per_group` edits near each, `copies` noisy conditions per
    edit (its bare query first); each edit's neuron is random."""
    gen = torch.Generator().manual_seed(0)
    axes = torch.nn.functional.normalize(torch.randn(groups, cond, generator=gen), dim=-1)
    n = groups * per_group
    queries = torch.nn.functional.normalize(axes.repeat_interleave(per_group, 0) + 0.05 * torch.randn(n, cond, generator=gen), dim=-1)
    vectors = torch.randn(n, dim, generator=gen) * 3
    edit = torch.arange(n).repeat_interleave(copies)
    conds = queries[edit] + 0.01 * torch.randn(len(edit), cond, generator=gen) * (torch.arange(len(edit)) % copies != 0)[:, None]
    return vectors, queries, conds, edit


def _hp(**generator) -> MeGHParams:
    return from_dict(MeGHParams, {"generator": {"steps": 300, "width": 64, "depth": 2, "batch_size": 32, "lr": 3e-3,
                                                "select_every": 100, **generator}})


def test_expert_count_follows_the_edits():
    assert [expert_count(n, 1000) for n in (1, 1000, 1001, 10_000)] == [1, 1, 2, 10]
    assert expert_count(10_000, 0) == 1
    with pytest.raises(ConfigError, match="edits_per_expert"):
        _hp(edits_per_expert=-1)


def test_spherical_kmeans_finds_separated_groups_and_follows_its_seed():
    _, queries, _, _ = _groups(groups=3, per_group=5)
    centroids, assign = spherical_kmeans(queries, 3, seed=0)
    truth = torch.arange(15) // 5
    # one cluster per group, whatever their order
    assert all(len(assign[truth == g].unique()) == 1 for g in range(3)) and len(assign.unique()) == 3
    assert torch.allclose(centroids.norm(dim=-1), torch.ones(3))
    again = spherical_kmeans(queries, 3, seed=0)
    assert torch.equal(again[1], assign) and torch.equal(again[0], centroids)
    # more clusters than rows would leave some empty: every row keeps a cluster of its own
    assert len(spherical_kmeans(queries[:2], 3, seed=0)[1].unique()) == 2


def test_experts_reproduce_their_edits_and_route_every_condition_home():
    vectors, queries, conds, edit = _groups()
    code = NeuronCode.pca(vectors, 5)
    mixture, stats = train_experts(_hp(edits_per_expert=3), vectors, code, conds, edit, len(vectors), torch.device("cpu"))
    assert stats["diffusion_experts"] == 2 and stats["diffusion_expert_edits"] == [3, 3]
    assert stats["diffusion_router_agreement"] == 1.0
    assert len(stats["diffusion_expert_selection_errors"]) == 2
    # each expert holds one group: the router sends each group's queries to one expert, and its samples are the edits' neurons
    route = mixture.route(queries)
    assert route[:3].unique().numel() == 1 and route[3:].unique().numel() == 1 and route[0] != route[3]
    err = relative_error(mixture.sample(queries), code.decode(code.encode(vectors)))
    assert (err < 0.15).all(), err
    # exact persistence
    loaded = ExpertMixture.from_state(mixture.config(), mixture.state_dict())
    assert torch.equal(loaded.sample(queries), mixture.sample(queries))


def test_one_expert_is_the_plain_generator_in_its_format():
    vectors, queries, conds, edit = _groups()
    code = NeuronCode.pca(vectors, 5)
    mixture, stats = train_experts(_hp(edits_per_expert=0), vectors, code, conds, edit, len(vectors), torch.device("cpu"))
    assert stats["diffusion_experts"] == 1 and "diffusion_router_agreement" not in stats
    (expert,) = mixture.experts
    plain = DiffusionGenerator(expert.cfg, expert.settings, code)
    plain.fit(vectors, conds, edit)
    assert torch.equal(plain.sample(queries), mixture.sample(queries))  # the same training, the same denoiser
    assert set(mixture.state_dict()) == set(plain.state_dict()) and mixture.config() == plain.config()
    assert torch.equal(DiffusionGenerator.from_state(mixture.config(), mixture.state_dict()).sample(queries), mixture.sample(queries))
