"""Batched per-edit neuron fitting: reaches the targets, is independent per edit, never touches weights."""

from __future__ import annotations

import pytest
import torch

from kebench.data.case import EditRequest
from editors.meg.fitting import evaluate_neurons, fit_neurons
from editors.meg.neuron import NeuronSpec
from kebench.fit_cache import FitCache
from kebench.models.loaded import exact_checksum

REQUESTS = [
    EditRequest("The capital of {} is", "France", "Rome", "Paris", "a"),
    EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French", "b"),
    EditRequest("{} plays the sport of", "Tiger Woods", "basketball", "golf", "c"),
]


@pytest.fixture
def lm(tiny_lm):
    # A random d=32 model needs a larger head to be able to state anything confidently.
    torch.manual_seed(1)
    torch.nn.init.normal_(tiny_lm.model.lm_head.weight, std=1.0)
    return tiny_lm


def test_fitting_reaches_every_target_and_reports_baseline(lm):
    res = fit_neurons(lm, REQUESTS, NeuronSpec(32), layer=2, max_steps=150)
    assert res.converged.all()
    assert res.efficacy.all()
    assert not res.baseline_efficacy.any()
    assert (res.nll < 0.1).all() and (res.baseline_nll > 1).all()
    assert res.summary()["oracle_efficacy"] == 1.0
    ok, nll = evaluate_neurons(lm, REQUESTS, NeuronSpec(32), 2, res.vectors)
    assert ok.all() and torch.allclose(nll, res.nll, atol=1e-4)


def test_batched_fitting_equals_one_at_a_time(lm):
    spec = NeuronSpec(32)
    together = fit_neurons(lm, REQUESTS, spec, layer=1, max_steps=60)
    for i, req in enumerate(REQUESTS):
        alone = fit_neurons(lm, [req], spec, layer=1, max_steps=60)
        assert int(alone.steps[0]) == int(together.steps[i])
        assert torch.allclose(alone.vectors[0], together.vectors[i], atol=1e-4)


def test_cached_chunks_give_the_same_neurons_without_refitting(lm, tmp_path):
    spec = NeuronSpec(32)
    first = FitCache("meg_neurons", exact_checksum(lm.model), "cpu", tmp_path)
    fitted = fit_neurons(lm, REQUESTS, spec, layer=1, max_steps=30, batch_size=2, cache=first)
    assert (first.hits, first.misses) == (0, 2)
    again = FitCache("meg_neurons", exact_checksum(lm.model), "cpu", tmp_path)
    reused = fit_neurons(lm, REQUESTS, spec, layer=1, max_steps=30, batch_size=2, cache=again)
    assert (again.hits, again.misses) == (2, 0)
    assert (fitted.chunks, fitted.cached_chunks, reused.cached_chunks) == (2, 0, 2)
    assert fitted.cached_seconds == 0.0 and reused.summary()["fit_cached_seconds"] > 0.0
    for name in ("vectors", "converged", "steps", "nll", "efficacy", "baseline_nll", "baseline_efficacy"):
        assert torch.equal(getattr(reused, name), getattr(fitted, name)), name
    # other settings (layer, steps, prefixes) miss
    fit_neurons(lm, REQUESTS, spec, layer=2, max_steps=30, batch_size=2, cache=again)
    fit_neurons(lm, REQUESTS, spec, layer=1, max_steps=31, batch_size=2, cache=again)
    fit_neurons(lm, REQUESTS, spec, layer=1, max_steps=30, batch_size=2, context_prefixes=["So. "], cache=again)
    assert again.hits == 2


def test_a_chunk_claimed_by_another_process_is_read_once_it_is_saved(lm, tmp_path):
    spec = NeuronSpec(32)
    alone = fit_neurons(lm, REQUESTS, spec, layer=1, max_steps=30, batch_size=2,
                        cache=FitCache("meg_neurons", exact_checksum(lm.model), "cpu", tmp_path / "a"))
    shared = FitCache("meg_neurons", exact_checksum(lm.model), "cpu", tmp_path / "b")
    shared.poll_seconds = 0.01
    looked: list[str] = []
    load, claim = shared.load, shared.claim

    def first_claim_is_theirs(key):  # the first chunk's claim belongs to a live process that is not this one
        return False if not looked or key == looked[0] else claim(key)

    def holder_saves(key):  # ... which saves its chunk (the same fit) once this one waits for it
        if not shared.path(key).is_file():
            shared.path(key).parent.mkdir(parents=True, exist_ok=True)
            shared.path(key).write_bytes((tmp_path / "a" / shared.path(key).relative_to(tmp_path / "b")).read_bytes())
            return True
        return False

    shared.load = lambda key, fields=(): (looked.append(key), load(key, fields))[1]
    shared.claim, shared.claimed = first_claim_is_theirs, holder_saves
    reused = fit_neurons(lm, REQUESTS, spec, layer=1, max_steps=30, batch_size=2, cache=shared)
    assert (reused.chunks, reused.cached_chunks) == (2, 1)
    assert looked[0] == looked[-1] and len(set(looked)) == 2  # the claimed chunk was looked at first and read last
    for name in ("vectors", "converged", "steps", "nll", "efficacy", "baseline_nll", "baseline_efficacy"):
        assert torch.equal(getattr(reused, name), getattr(alone, name)), name


def test_fitting_with_prefixes_and_activation_neuron(lm):
    res = fit_neurons(lm, REQUESTS[:2], NeuronSpec(32, "silu"), layer=0, max_steps=150, context_prefixes=("Fact: ",))
    assert res.vectors.shape == (2, 65)
    assert res.efficacy.all()


def test_weights_flags_and_grads_untouched(lm):
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    lm.model.lm_head.weight.requires_grad_(True)
    fit_neurons(lm, REQUESTS[:1], NeuronSpec(32), layer=2, max_steps=5)
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    assert lm.model.lm_head.weight.requires_grad
    assert all(p.grad is None for p in lm.model.parameters())


def test_unconverged_edits_are_kept_and_reported(lm):
    res = fit_neurons(lm, REQUESTS, NeuronSpec(32), layer=2, max_steps=1, lr=1e-4)
    assert not res.converged.any()
    assert res.vectors.shape[0] == 3 and res.summary()["fit_failed"] == 3
    assert (res.steps == 1).all()


def test_zero_neurons_score_like_the_unedited_model(lm):
    res = fit_neurons(lm, REQUESTS, NeuronSpec(32), layer=2, max_steps=0)
    ok, nll = evaluate_neurons(lm, REQUESTS, NeuronSpec(32), 2, torch.zeros(3, 64))
    assert torch.allclose(nll, res.baseline_nll, atol=1e-5)
    assert torch.equal(ok, res.baseline_efficacy)


def test_fitting_inside_a_code_subspace_gives_exact_codes_and_keys_the_cache_by_the_code(lm, tmp_path):
    """Neurons fitted inside a NeuronCode's subspace: every edit still converges, each neuron is exactly
    `code.decode(its code)`, and a fit cached under one code is not reused under another."""
    from editors.meg.code import NeuronCode

    spec = NeuronSpec(32)
    extra = [
        EditRequest("The official language of {} is", "Brazil", "German", "Portuguese", "d"),
        EditRequest("{} was founded in the city of", "Toyota", "Lyon", "Koromo", "e"),
    ]
    pilot = fit_neurons(lm, REQUESTS + extra, spec, layer=2, max_steps=150)
    code = NeuronCode.pca(pilot.vectors, 4)
    assert code.size == 4
    cache = FitCache("meg_neurons", exact_checksum(lm.model), "cpu", tmp_path)
    res = fit_neurons(lm, REQUESTS, spec, layer=2, lr=0.1, max_steps=300, code=code, cache=cache)
    assert res.codes is not None and res.codes.shape == (3, 4)
    assert torch.allclose(res.vectors, code.decode(res.codes), atol=1e-6)
    assert res.converged.all() and res.efficacy.all()
    ok, _ = evaluate_neurons(lm, REQUESTS, spec, 2, res.vectors)
    assert ok.all()
    other = NeuronCode.pca(pilot.vectors, 3)
    fit_neurons(lm, REQUESTS, spec, layer=2, lr=0.1, max_steps=300, code=other, cache=cache)
    assert (cache.hits, cache.misses) == (0, 2)
