"""Conditional diffusion over neuron codes: round trip on toy clusters, exact persistence, sizing, kNN/oracle."""

from __future__ import annotations

import pytest
import torch

from editors.meg import diffusion
from editors.meg.code import NeuronCode, relative_error
from editors.meg.config import MeGHParams
from kebench.config import from_dict
from editors.meg.denoiser import DenoiserConfig, build_denoiser, count_parameters, mlp_width
from editors.meg.diffusion import DiffusionGenerator, DiffusionSettings, first_conditions
from kebench.errors import ConfigError
from editors.meg.generators import KnnGenerator, SubjectOracle


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/editors/conftest.py


def _clusters(k: int = 4, dim: int = 100, cond: int = 16, n: int = 200):
    """k edits' neurons (`centers`), each with n/k noisy conditions around its query embedding."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(k, dim, generator=gen) * 3
    conds = torch.nn.functional.normalize(torch.randn(k, cond, generator=gen), dim=-1)
    label = torch.arange(n) % k
    return centers, conds, conds[label] + 0.02 * torch.randn(n, cond, generator=gen), label


def _generator(centers, kind="mlp", width=64, depth=2, **settings):
    code = NeuronCode.pca(centers, 16)
    cfg = DenoiserConfig(kind, code.size, 16, width=width, depth=depth, patch=2, heads=2)
    return DiffusionGenerator(cfg, DiffusionSettings(**{"steps": 300, "batch_size": 64, "lr": 2e-3, **settings}), code)


@pytest.fixture(scope="module", params=["x0", "v"])
def trained(request):
    torch.set_num_threads(1)
    centers, conds, y, edit = _clusters()
    gen = _generator(centers, prediction=request.param, select_every=100)
    stats = gen.fit(centers, y, edit)
    return gen, centers, conds, stats


def test_generated_neurons_reproduce_their_edits_neuron(trained):
    """x0- and v-prediction both learn the table: each query's sample is its edit's neuron to a few percent."""
    gen, centers, conds, stats = trained
    assert stats["diffusion_loss_last"] < 0.5 * stats["diffusion_loss_first"]
    err = relative_error(gen.sample(conds), centers)
    assert (err < 0.1).all(), err
    assert stats["diffusion_selected_step"] in (100, 200, 300) and stats["diffusion_selection_error"] < 0.1


def test_the_checkpoint_with_the_lowest_reconstruction_error_is_kept(monkeypatch):
    """Selection keeps the best check, not the last: a schedule whose last check is worse returns the earlier weights."""
    centers, conds, y, edit = _clusters()
    gen = _generator(centers, steps=200, select_every=100)
    errors = iter([0.05, 0.5])
    kept = {}
    real = DiffusionGenerator._select

    def select(self, step, ema, c, fitted, best):
        real(self, step, ema, c, fitted, best)
        best["error"] = min(best["error"], next(errors)) if step == 100 else best["error"]
        kept[step] = {k: v.clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(DiffusionGenerator, "_select", select)
    stats = gen.fit(centers, y, edit)
    assert stats["diffusion_selected_step"] == 100
    final = gen.model.state_dict()
    assert any(not torch.equal(final[k], kept[200][k]) for k in final)


def test_sampling_is_deterministic_and_survives_save_load(trained):
    gen, _, conds, _ = trained
    again = DiffusionGenerator.from_state(gen.config(), gen.state_dict())
    assert torch.equal(gen.sample(conds), again.sample(conds))
    assert torch.allclose(gen.sample(conds[:1]), gen.sample(conds)[:1], atol=1e-4)  # batch size only changes rounding


def test_initial_weights_follow_the_seed_not_what_ran_before():
    centers = _clusters()[0]
    first = _generator(centers, seed=3)
    torch.rand(1000)  # another stage drew from the global generator in between (a cache miss instead of a hit)
    again, other = _generator(centers, seed=3), _generator(centers, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values(), strict=True))
    state = torch.random.get_rng_state()
    _generator(centers, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # and building it leaves the global generator as it was


def test_first_conditions_are_each_edits_bare_query():
    # the editor lays out conditions as every edit's query, then its augmentations; edit 3 has none here
    cond_edit = torch.tensor([0, 1, 2, 4, 0, 0, 1, 1, 2, 2, 4, 4])
    assert first_conditions(cond_edit).tolist() == [0, 1, 2, 3]
    assert first_conditions(torch.tensor([2, 0, 2, 1, 0])).tolist() == [1, 3, 0]  # by edit, wherever it first is


@pytest.mark.parametrize("kind", ["mlp", "dit"])
def test_fresh_denoiser_is_adaln_zero(kind):
    model = build_denoiser(DenoiserConfig(kind, size=70, cond_dim=8, patch=32, width=32, depth=2, heads=2))
    out = model(torch.randn(3, 70), torch.tensor([1, 500, 999]), torch.randn(3, 8))
    assert out.shape == (3, 70) and torch.equal(out, torch.zeros(3, 70))


def test_mlp_width_gives_the_parameters_per_number_asked_for():
    for n_edits, size in ((1000, 64), (10000, 64), (100, 19)):
        width = mlp_width(n_edits, size, 384, depth=4, ratio=4.0)
        params = count_parameters(build_denoiser(DenoiserConfig("mlp", size, 384, width=width, depth=4)))
        assert params >= 4.0 * n_edits * size
        if width > 64:  # the narrowest such width: one step narrower is too small
            smaller = count_parameters(build_denoiser(DenoiserConfig("mlp", size, 384, width=width - 32, depth=4)))
            assert smaller < 4.0 * n_edits * size


def test_neuron_code_round_trip_whitening_and_floor():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 5, generator=gen) @ torch.randn(5, 12, generator=gen)  # rank 5
    x[:, 0] = 1.0  # a dimension that never moves
    code = NeuronCode.pca(x, 8)
    assert code.size == 8 and (code.std > 0).all()
    assert torch.allclose(code.decode(code.encode(x)), x, atol=1e-4)  # rank 5 <= 8 components: exact
    assert code.energy(x) == pytest.approx(1.0, abs=1e-5)
    z = NeuronCode.pca(x, 3).encode(x)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(3), atol=1e-3)  # whitened: unit variance per entry
    assert NeuronCode.pca(x, 3).energy(x) < 1.0


def test_knn_and_subject_oracle():
    bank = torch.eye(3)
    vectors = torch.arange(6.0).view(3, 2)
    knn = KnnGenerator(bank, torch.tensor([0, 1, 2]), vectors)
    assert torch.equal(knn.generate(torch.tensor([[0.1, 0.9, 0.0]]), ["x"]), vectors[1:2])
    oracle = SubjectOracle(bank, torch.tensor([0, 1, 2]), vectors, ["Paris", "New York", "York"])
    got = oracle.generate(torch.tensor([[1.0, 0.0, 0.0]] * 2), ["Where is New York?", "nothing here"])
    assert torch.equal(got, torch.stack([vectors[1], vectors[0]]))  # longest subject; else nearest


def test_condition_noise_maps_a_neighbourhood_of_each_condition_to_its_cluster():
    centers, conds, y, edit = _clusters()
    gen = _generator(centers, cond_noise=0.6)
    gen.fit(centers, y, edit)
    g = torch.Generator().manual_seed(7)
    shifted = conds + 0.4 * torch.nn.functional.normalize(torch.randn(conds.shape, generator=g), dim=-1)  # cos ≈ 0.93
    dist = torch.cdist(gen.sample(shifted), centers)
    assert dist.argmin(-1).tolist() == [0, 1, 2, 3]
    spread = torch.cdist(centers, centers)
    assert (dist.diagonal() < 0.25 * spread[spread > 0].min()).all()
    with pytest.raises(ConfigError, match="generator.cond_noise"):
        from_dict(MeGHParams, {"generator.cond_noise": -0.1})


def test_interrupted_training_resumes_to_the_same_denoiser(tmp_path, monkeypatch):
    centers, conds, y, edit = _clusters()
    settings = dict(steps=60, batch_size=32, ema=0.9, select_every=30)
    torch.manual_seed(0)
    straight = _generator(centers, width=32, depth=1, **settings)
    straight_stats = straight.fit(centers, y, edit)

    partial = tmp_path / "train.partial.pt"
    torch.manual_seed(0)
    first = _generator(centers, width=32, depth=1, **settings)

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
            first.fit(centers, y, edit, checkpoint=partial, checkpoint_every=20)
    assert saves == [20, 40] and partial.is_file()

    torch.manual_seed(0)
    resumed = _generator(centers, width=32, depth=1, **settings)
    stats = resumed.fit(centers, y, edit, checkpoint=partial, checkpoint_every=20)
    assert not partial.exists()  # finished: the partial state is gone
    assert stats == straight_stats
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    partial.write_bytes(b"not a checkpoint")  # an unreadable partial is ignored, not trusted
    torch.manual_seed(0)
    again = _generator(centers, width=32, depth=1, **settings)
    assert again.fit(centers, y, edit, checkpoint=partial, checkpoint_every=20) == straight_stats


def test_schedule_follows_the_edit_count_and_the_gate_the_scale():
    hp = from_dict(MeGHParams, {"generator.visits": 600, "generator.batch_size": 256})
    assert hp.diffusion_schedule(1000) == 2344 and hp.diffusion_schedule(10000) == 23438  # 600 samples per edit
    assert from_dict(MeGHParams, {"generator.steps": 50}).diffusion_schedule(10000) == 50  # an explicit count is the user's choice
    assert hp.gate_for(100) == "net" and hp.gate_for(1000) == "similarity" and hp.gate_for(10000) == "similarity"
    assert from_dict(MeGHParams, {"gate.kind": "net"}).gate_for(10000) == "net"
    with pytest.raises(ConfigError, match="generator.prediction"):
        from_dict(MeGHParams, {"generator.prediction": "eps"})
    with pytest.raises(ConfigError, match="denoiser"):
        from_dict(MeGHParams, {"generator.denoiser": "unet"})
