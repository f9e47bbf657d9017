"""MeG end to end on tiny models: registered, gated, exact when off, restorable, save/load identical."""

from __future__ import annotations

import pytest
import torch

from kebench.config import from_dict
from kebench.editor import EDITORS
from kebench.errors import ConfigError, DataError
from kebench.models.loaded import exact_checksum
from kebench.scoring import score_targets
from kebench.suites import load_cases
from editors.meg import MeGEditor, MeGHandle, MeGHParams


@pytest.fixture(scope="module")
def cases():
    return load_cases("counterfact")[:4]


@pytest.fixture
def lm(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(1)
    torch.nn.init.normal_(tiny_lm.model.lm_head.weight, std=1.0)  # lets a d=32 model state targets confidently
    return tiny_lm


def small(encoder_dir: str, **kw) -> MeGHParams:
    """Settings for the tiny model; `kw` by section (`gate={"alpha": 0.0}`)."""
    base = {
        "layer": 2, "fitting": {"context_prefixes": (), "max_steps": 150},
        "encoder": {"model": encoder_dir, "pooling": "mean", "pairs": 64, "steps": 3, "batch_size": 16},
        "gate": {"steps": 400, "negatives": 200, "hidden": 128, "lr": 3e-3},
        "generator": {"steps": 40, "width": 32, "depth": 1, "augment_prefixes": ("Fact: ",)},
    }
    for key, value in kw.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return from_dict(MeGHParams, base)


def _scores(lm, prompts, targets, cond=None):
    return [s.token_logprobs for s in score_targets(lm, prompts, targets, condition=cond)]


def test_registered_with_per_model_defaults():
    assert EDITORS.get("meg") is MeGEditor
    assert MeGEditor.default_hparams("default").layer == 20
    assert MeGEditor.default_hparams("meta-llama/Meta-Llama-3-8B-Instruct").layer == 14
    with pytest.raises(ConfigError):
        from_dict(MeGHParams, {"generator.kind": "gan"})


def test_knn_meg_states_the_edits_gates_unrelated_prompts_and_restores(lm, cases, encoder_dir):
    original = exact_checksum(lm.model)
    reqs = [c.request for c in cases]
    prompts, targets = [c.prompt for c in cases], [c.target_new for c in cases]
    unrelated = ["The Eiffel Tower is made of", "Bananas are usually coloured"]
    before = _scores(lm, prompts + unrelated, targets + ["iron", "yellow"])
    handle = MeGEditor(small(encoder_dir, generator={"kind": "knn"}, gate={"alpha": 0.0})).apply(lm, reqs)
    assert isinstance(handle, MeGHandle)
    s = handle.stats
    assert s["oracle_efficacy"] == 1.0 and s["fit_converged"] == 1.0 and s["fire_rate_requests"] == 1.0
    assert s["generated_efficacy"] == 1.0 and s["false_fire_heldout"] == 0.0
    assert {"fit", "encoder", "familiarity", "generator"} <= set(s["seconds"])
    fire, _ = handle.fires(handle.encoder.encode(unrelated))
    assert not fire.any()
    after = score_targets(lm, prompts + unrelated, targets + ["iron", "yellow"], condition=handle.conditioning)
    assert all(all(r.token_correct) for r in after[:4])
    assert [r.token_logprobs for r in after[4:]] == before[4:]  # gate closed: bit-identical
    handle.restore()
    assert exact_checksum(lm.model) == original
    assert _scores(lm, prompts, targets, handle.conditioning) == before[:4]


def test_self_check_scores_a_closed_gate_apart_from_the_generator(lm, cases, encoder_dir):
    """The self-check scores every edit once: rows whose gate stays closed get the generator's neuron for the
    ungated efficacy and the unedited model for the gated one."""
    reqs = [c.request for c in cases]
    handle = MeGEditor(small(encoder_dir, generator={"kind": "knn"}, gate={"tau": -1e9})).apply(lm, reqs)  # never fires
    s = handle.stats
    assert s["fire_rate_requests"] == 0.0
    assert s["generator_efficacy_ungated"] == 1.0 and s["generated_efficacy"] == 0.0
    handle.restore()


def test_always_fire_ablation_and_oracle_generator(lm, cases, encoder_dir):
    reqs = [c.request for c in cases]
    handle = MeGEditor(small(encoder_dir, generator={"kind": "oracle"}, gate={"enabled": False})).apply(lm, reqs)
    fire, _ = handle.fires(handle.encoder.encode(["anything at all"]))
    assert fire.all() and handle.familiarity is None
    assert handle.stats["generated_efficacy"] == 1.0
    handle.restore()


@pytest.mark.parametrize("experts", [1, 2])
def test_save_load_gives_identical_outputs(lm, cases, encoder_dir, tmp_path, experts):
    reqs = [c.request for c in cases]
    editor = MeGEditor(small(encoder_dir, generator={"edits_per_expert": 4 // experts}))
    handle = editor.apply(lm, reqs)
    assert handle.stats["diffusion_experts"] == experts
    # with a router, how often held-out paraphrases cross its boundaries is measured
    agreement = handle.stats.get("diffusion_router_paraphrase_agreement")
    assert (agreement is None) == (experts == 1) and (agreement is None or 0.0 <= agreement <= 1.0)
    probes = [c.prompt for c in cases] + list(cases[0].paraphrases) + ["The Eiffel Tower is made of"]
    targets = [c.target_new for c in cases] + [cases[0].target_new] * len(cases[0].paraphrases) + ["iron"]
    first = _scores(lm, probes, targets, handle.conditioning)
    editor.save_edits(handle, tmp_path / "edits")
    handle.restore()
    loaded = MeGEditor().load_edits(lm, tmp_path / "edits")
    assert loaded.tau == handle.tau and loaded.stats["n_edits"] == 4
    assert _scores(lm, probes, targets, loaded.conditioning) == first
    loaded.restore()
    with pytest.raises(DataError, match="meg.json"):
        MeGEditor().load_edits(lm, tmp_path)


def test_second_apply_reuses_fitted_neurons_and_trained_diffusion(lm, cases, encoder_dir):
    reqs = [c.request for c in cases]
    probes, targets = [c.prompt for c in cases], [c.target_new for c in cases]
    first = MeGEditor(small(encoder_dir)).apply(lm, reqs)
    assert "diffusion_from_cache" not in first.stats
    scores = _scores(lm, probes, targets, first.conditioning)
    first.restore()
    # the gate ablation changes nothing the neurons or the generator depend on: both come from the cache
    again = MeGEditor(small(encoder_dir, gate={"enabled": False})).apply(lm, reqs)
    assert again.stats["diffusion_from_cache"] is True and again.stats["fit_cached_chunks"] == again.stats["fit_chunks"]
    assert again.stats["diffusion_train_seconds"] == first.stats["diffusion_train_seconds"] > 0  # the original cost
    assert again.stats["diffusion_loss_last"] == first.stats["diffusion_loss_last"]
    assert torch.equal(again.generator.generate(again.encoder.encode(probes), probes),
                       first.generator.generate(first.encoder.encode(probes), probes))
    again.restore()
    fresh = MeGEditor(small(encoder_dir, fitting={"cache": False})).apply(lm, reqs)
    assert "diffusion_from_cache" not in fresh.stats
    assert _scores(lm, probes, targets, fresh.conditioning) == scores  # the cache changes no number
    fresh.restore()


def test_similarity_gate_fires_on_edits_not_on_unrelated_and_survives_save_load(lm, cases, encoder_dir, tmp_path):
    reqs = [c.request for c in cases]
    editor = MeGEditor(small(encoder_dir, gate={"kind": "similarity"}, generator={"kind": "knn"}))
    handle = editor.apply(lm, reqs)
    s = handle.stats
    assert s["gate"] == "similarity" and s["fire_rate_requests"] == 1.0 and s["false_fire_heldout"] <= 0.05 + 1e-6
    fire, _ = handle.fires(handle.encoder.encode(["The Eiffel Tower is made of", "Bananas are usually coloured"]))
    assert not fire.any()
    probes = [c.prompt for c in cases] + ["The Eiffel Tower is made of"]
    targets = [c.target_new for c in cases] + ["iron"]
    first = _scores(lm, probes, targets, handle.conditioning)
    editor.save_edits(handle, tmp_path / "edits")
    handle.restore()
    loaded = MeGEditor().load_edits(lm, tmp_path / "edits")
    assert _scores(lm, probes, targets, loaded.conditioning) == first
    loaded.restore()
    with pytest.raises(ConfigError, match="unknown familiarity gate"):
        from_dict(MeGHParams, {"gate.kind": "oracle"})


def _hooks(lm) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())


def test_a_sequence_grows_one_gate_and_one_generator(lm, encoder_dir, tmp_path):
    """Sequential MeG: the second step fits only its new edits (inside the first step's code), rebuilds the gate
    over every edit so far, continues the first step's denoiser, and retires the first hook; a resumed sequence
    (edits and state read back) continues the same way."""
    cases = load_cases("counterfact")[:8]
    reqs = [c.request for c in cases]
    hooks = _hooks(lm)
    editor = MeGEditor(small(encoder_dir, gate={"kind": "similarity"}, fitting={"code_size": 5}))
    editor.plan(reqs)
    first = editor.apply(lm, reqs[:6])
    assert _hooks(lm) == hooks + 1 and first.stats["n_edits_so_far"] == 6
    editor.save_edits(first, tmp_path / "step0")
    state = editor.state_dict()
    second = editor.apply(lm, reqs[6:])
    s = second.stats
    assert s["n_edits"] == 2 and s["n_edits_so_far"] == 8 and s["fit_edits"] == 2  # only the new edits fitted
    assert s["diffusion_continued"] is True and second.generator.mixture is first.generator.mixture  # warm start
    assert s["diffusion_train_pairs"] == 8 * 2  # every edit so far: its query and one augmented prefix
    assert len(second.familiarity.bank) == 16  # the gate over every edit so far
    assert not first.neuron.attached and _hooks(lm) == hooks + 1  # one hook serves the sequence
    probes = [c.prompt for c in cases]
    fire, _ = second.fires(second.encoder.encode(probes))
    assert fire.all()  # the first step's edits still open the (new) gate
    with first.conditioning(probes):  # a retired handle conditions nothing
        pass
    assert first.prompts_seen == 0
    editor.save_edits(second, tmp_path / "step1")
    state1 = editor.state_dict()
    expected = _scores(lm, probes, [c.target_new for c in cases], second.conditioning)
    second.restore()
    assert _hooks(lm) == hooks

    again = MeGEditor(small(encoder_dir, gate={"kind": "similarity"}, fitting={"code_size": 5}))  # a resumed run: edits, then state, per step
    loaded0 = again.load_edits(lm, tmp_path / "step0")
    again.load_state_dict(state)
    loaded1 = again.load_edits(lm, tmp_path / "step1")
    assert not loaded0.neuron.attached and loaded1.neuron.attached and _hooks(lm) == hooks + 1
    got = _scores(lm, probes, [c.target_new for c in cases], loaded1.conditioning)
    # the same neurons (sampled in batches of other sizes: float rounding only)
    assert all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4) for a, b in zip(got, expected, strict=True))
    again.load_state_dict(state1)
    assert again.state_dict()["grown"]["cond"].shape[0] == 16 and again._grown.handle is loaded1  # ready for a third step
    loaded1.restore()
    # with experts, a later step's edits join the expert of their nearest centroid and only those experts train
    moe = MeGEditor(small(encoder_dir, gate={"kind": "similarity"}, fitting={"code_size": 5}, generator={"edits_per_expert": 4}))
    moe.plan(reqs)
    one = moe.apply(lm, reqs[:6])
    assert one.stats["diffusion_experts"] == 2 and sum(one.stats["diffusion_expert_edits"]) >= 2
    two = moe.apply(lm, reqs[6:])
    route = two.generator.mixture.route(two.encoder.encode([c.prompt for c in cases[6:]]))
    assert two.generator.mixture is one.generator.mixture and two.stats["diffusion_continued"] is True
    # one schedule per expert that got new edits (the tiny settings fix its steps)
    assert two.stats["diffusion_steps"] == moe.hparams.generator.steps * len(route.unique())
    two.restore()
    # a first step too small for the code every later step is fitted in: one line naming the fix
    short = MeGEditor(small(encoder_dir, fitting={"code_size": 5}))
    short.plan(reqs)
    with pytest.raises(ConfigError, match="--batch-size 6 or more, or --hparam fitting.code_size=0"):
        short.apply(lm, reqs[:5])


def test_a_sequential_run_grows_and_resumes_through_the_runner(lm, encoder_dir, tmp_path, monkeypatch):
    """`kebench run --editor meg --mode sequential`: every step after the first grows one MeG; interrupted after its
    second step, the resumed run reads both back (one hook live) and its third step grows from them."""
    from kebench.runner import Run, RunConfig

    overrides = ("layer=2", "fitting.context_prefixes=[]", "fitting.max_steps=150", f"encoder.model={encoder_dir}",
                 "fitting.code_size=2", "encoder.pooling=mean", "encoder.pairs=64", "encoder.steps=3", "encoder.batch_size=16",
                 "gate.kind=similarity", "generator.steps=40", "generator.width=32", "generator.depth=1",
                 "generator.augment_prefixes=['Fact: ']")
    cfg = RunConfig(editor="meg", dataset="counterfact", scale=9, mode="sequential", batch_size=3, general=False,
                    hparam_overrides=overrides)
    out = tmp_path / "r.json"
    real = MeGEditor.apply
    calls = []

    def stop_at_third(self, lm_, requests):
        calls.append(len(requests))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, lm_, requests)

    monkeypatch.setattr(MeGEditor, "apply", stop_at_third)
    hooks = _hooks(lm)
    with pytest.raises(KeyboardInterrupt):
        Run(cfg, out, model_loader=lambda _: lm).execute()
    # each step's state holds every edit so far: only the newest stays on disk (not one growing copy per step)
    states = sorted(p.parent.name for p in out.with_name("r.json.ckpt").glob("edits/step_*/editor_state.pt"))
    assert states == ["step_00001"]
    for m in lm.model.modules():  # the interrupted process is gone, and its hooks with it
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    monkeypatch.setattr(MeGEditor, "apply", real)
    saved = Run(cfg, out, resume=True, model_loader=lambda _: lm).execute()
    steps = [s["stats"] for s in saved["editor_stats"]]
    assert [(s["n_edits"], s["n_edits_so_far"], s["fit_edits"]) for s in steps] == [(3, 3, 3), (3, 6, 3), (3, 9, 3)]
    assert "diffusion_continued" not in steps[0] and steps[1]["diffusion_continued"] and steps[2]["diffusion_continued"]
    assert _hooks(lm) == hooks and saved["restore_bit_exact"]
