"""Conditional diffusion over neuron vectors: round trip on toy clusters, exact persistence, kNN/oracle."""

from __future__ import annotations

import pytest
import torch

from editors.meg import diffusion
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


def test_interrupted_training_resumes_to_the_same_denoiser(tmp_path, monkeypatch):
    centers, conds, x, y = _clusters()
    cfg = auto_denoiser(100, 16, 200, patch=16, hidden=32, depth=1)
    settings = DiffusionSettings(steps=60, batch_size=32, lr=2e-3, ema=0.9)
    torch.manual_seed(0)
    straight = DiffusionGenerator(cfg, settings)
    straight_stats = straight.fit(x, y)

    partial = tmp_path / "train.partial.pt"
    torch.manual_seed(0)
    first = DiffusionGenerator(cfg, settings)

    class Interrupt(Exception):
        pass

    real_save = diffusion.atomic_torch_save
    saves = []

    def save_then_stop(path, obj):
        real_save(path, obj)
        saves.append(obj["step"])
        if obj["step"] == 40:
            raise Interrupt

    with monkeypatch.context() as patch:
        patch.setattr(diffusion, "atomic_torch_save", save_then_stop)
        with pytest.raises(Interrupt):
            first.fit(x, y, checkpoint=partial, checkpoint_every=20)
    assert saves == [20, 40] and partial.is_file()

    torch.manual_seed(0)
    resumed = DiffusionGenerator(cfg, settings)
    stats = resumed.fit(x, y, checkpoint=partial, checkpoint_every=20)
    assert not partial.exists()  # finished: the partial state is gone
    assert stats == straight_stats
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    partial.write_bytes(b"not a checkpoint")  # an unreadable partial is ignored, not trusted
    torch.manual_seed(0)
    again = DiffusionGenerator(cfg, settings)
    assert again.fit(x, y, checkpoint=partial, checkpoint_every=20) == straight_stats


def test_auto_schedule_reports_when_its_step_cap_cuts_the_epochs():
    hp = MeGHParams(diffusion_epochs=150)
    # 1,000 CounterFact edits (5,000 pairs): 150 passes fit under the cap
    assert hp.diffusion_schedule(5000) == (5859, 128) and hp.diffusion_capped(5000) is None
    # 10,000 edits (49,980 pairs): the 20,000-step cap leaves 51 of the 150 passes
    steps, batch = hp.diffusion_schedule(49980)
    assert steps == 20000 and batch == 128 and hp.diffusion_capped(49980) == 150 * 49980 // 128
    # an explicit step count is the user's choice, not a cap
    assert MeGHParams(diffusion_epochs=150, diffusion_steps=20000).diffusion_capped(49980) is None
