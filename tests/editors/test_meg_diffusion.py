"""Conditional diffusion over neuron vectors: round trip on toy clusters, exact persistence, kNN/oracle."""

from __future__ import annotations

import pytest
import torch

from editors.meg.diffusion import (
    DenoiserConfig,
    DiffusionGenerator,
    DiffusionSettings,
    PatchDenoiser,
    Standardizer,
    auto_denoiser,
)
from editors.meg.config import MeGHParams
from kebench.errors import ConfigError
from editors.meg.generators import KnnGenerator, SubjectOracle


@pytest.fixture(autouse=True)
def one_thread():
    # Small nets on a shared CPU: intra-op threading only adds overhead.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _clusters(k: int = 4, dim: int = 100, cond: int = 16, n: int = 200):
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(k, dim, generator=gen) * 3
    conds = torch.nn.functional.normalize(torch.randn(k, cond, generator=gen), dim=-1)
    label = torch.arange(n) % k
    return centers, conds, centers[label] + 0.1 * torch.randn(n, dim, generator=gen), conds[label]


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    centers, conds, x, y = _clusters()
    cfg = auto_denoiser(100, 16, 200, patch=16, hidden=64, depth=2)
    gen = DiffusionGenerator(cfg, DiffusionSettings(steps=300, batch_size=64, lr=2e-3))
    stats = gen.fit(x, y)
    return gen, centers, conds, stats


def test_generated_samples_land_in_their_conditions_cluster(trained):
    gen, centers, conds, stats = trained
    assert stats["diffusion_loss_last"] < 0.5 * stats["diffusion_loss_first"]
    samples = gen.sample(conds)
    dist = torch.cdist(samples, centers)
    assert dist.argmin(-1).tolist() == [0, 1, 2, 3]
    spread = torch.cdist(centers, centers)
    assert (dist.diagonal() < 0.25 * spread[spread > 0].min()).all()


def test_sampling_is_deterministic_and_survives_save_load(trained):
    gen, _, conds, _ = trained
    again = DiffusionGenerator.from_state(gen.config(), gen.state_dict())
    assert torch.equal(gen.sample(conds), again.sample(conds))
    assert torch.allclose(gen.sample(conds[:1]), gen.sample(conds)[:1], atol=1e-4)  # batch size only changes rounding


def test_fresh_denoiser_is_adaln_zero():
    model = PatchDenoiser(DenoiserConfig(size=70, cond_dim=8, patch=32, hidden=32, depth=2, heads=2))
    out = model(torch.randn(3, 70), torch.tensor([1, 500, 999]), torch.randn(3, 8))
    assert out.shape == (3, 70) and torch.equal(out, torch.zeros(3, 70))


def test_standardizer_round_trip_and_floor():
    x = torch.randn(20, 6)
    x[:, 0] = 1.0  # a dimension that never moves
    s = Standardizer.fit(x)
    assert torch.allclose(s.decode(s.encode(x)), x, atol=1e-5)
    assert (s.std > 0).all()


def test_knn_and_subject_oracle():
    bank = torch.eye(3)
    vectors = torch.arange(6.0).view(3, 2)
    knn = KnnGenerator(bank, torch.tensor([0, 1, 2]), vectors)
    assert torch.equal(knn.generate(torch.tensor([[0.1, 0.9, 0.0]]), ["x"]), vectors[1:2])
    oracle = SubjectOracle(bank, torch.tensor([0, 1, 2]), vectors, ["Paris", "New York", "York"])
    got = oracle.generate(torch.tensor([[1.0, 0.0, 0.0]] * 2), ["Where is New York?", "nothing here"])
    assert torch.equal(got, torch.stack([vectors[1], vectors[0]]))  # longest subject; else nearest


def test_condition_noise_maps_a_neighbourhood_of_each_condition_to_its_cluster():
    centers, conds, x, y = _clusters()
    cfg = auto_denoiser(100, 16, 200, patch=16, hidden=64, depth=2)
    gen = DiffusionGenerator(cfg, DiffusionSettings(steps=300, batch_size=64, lr=2e-3, cond_noise=0.6))
    gen.fit(x, y)
    g = torch.Generator().manual_seed(7)
    shifted = conds + 0.4 * torch.nn.functional.normalize(torch.randn(conds.shape, generator=g), dim=-1)  # cos ≈ 0.93
    dist = torch.cdist(gen.sample(shifted), centers)
    assert dist.argmin(-1).tolist() == [0, 1, 2, 3]
    spread = torch.cdist(centers, centers)
    assert (dist.diagonal() < 0.25 * spread[spread > 0].min()).all()
    with pytest.raises(ConfigError, match="diffusion_cond_noise"):
        MeGHParams(diffusion_cond_noise=-0.1)
