"""The runner end to end on a tiny model with a toy suite: phases, checkpoints, resume, restore."""

from __future__ import annotations

import json

import pytest
import torch

from kebench import runner
from kebench.data.case import EditCase, EditRequest
from kebench.editor import WeightEditHandle
from kebench.errors import ConfigError
from kebench.runner import Run, RunConfig, case_requests
from kebench.suites import SUITES, LoadedData, Suite
from kebench.tokens import encode_prompt_targets

from tests.helpers import target_nll

CASES = [
    EditCase(
        case_id=str(i),
        suite="toy",
        requests=(EditRequest("{} lives in", subj, tgt, "Paris"),),
        paraphrases=(f"Where does {subj} live? In",),
    )
    for i, (subj, tgt) in enumerate([("Alice", "Rome"), ("Bob", "Oslo"), ("Carol", "Lima"), ("Dan", "Kyiv")])
]
CALLS: list[int] = []


def _load(data_file, fmt):
    return LoadedData(list(CASES), [{"path": "toy", "sha256": "0" * 64, "format": "toy", "records": len(CASES)}])


def _evaluate(lm, cases, refs, condition, batch_size=32):
    CALLS.append(len(cases))
    b = encode_prompt_targets(lm.tokenizer, [c.prompt for c in cases], [c.target_new for c in cases])
    with torch.no_grad():
        nll = target_nll(lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.labels)
    return [{"case_id": c.case_id, "nll": float(n), "efficacy": float(n < 5.0)} for c, n in zip(cases, nll)]


def _aggregate(records):
    return {k: sum(r[k] for r in records) / len(records) for k in ("nll", "efficacy")}


if "toy" not in SUITES:
    SUITES.register("toy", Suite("toy", "test suite", _evaluate, _aggregate, headline=("efficacy",), loader=_load))


@pytest.fixture
def loader(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path / "cache"))  # pre-edit records cache per test
    return lambda cfg: tiny_lm


def _cfg(**kw):
    base = dict(editor="ft", dataset="toy", scale=4, hparam_overrides=("layers=[2]", "lr=0.01", "steps=5", "norm_constraint=0.05"), chunk_size=2,
                general=False)  # general ability: its own test below
    base.update(kw)
    return RunConfig(**base)


def _interrupted_before_final_evaluation(run: Run) -> list[str]:
    """Run `run` until its final (post-edit) evaluation starts, where it stops as a killed process would; returns
    the names of the evaluations it got through."""
    real, done = run._records, []

    def records(name, cases, fn, label, path=None):
        if name == "post":
            raise KeyboardInterrupt
        done.append(name)
        return real(name, cases, fn, label, path)

    run._records = records
    with pytest.raises(KeyboardInterrupt):
        run.execute()
    return done


def test_run_writes_results_with_provenance_and_restores(tmp_path, loader, tiny_lm):
    out = tmp_path / "r.json"
    before = {n: p.clone() for n, p in tiny_lm.model.named_parameters()}
    result = Run(_cfg(), out, model_loader=loader).execute()
    saved = json.loads(out.read_text())
    assert saved["schema_version"] == 2 and saved["editor"] == "ft"
    assert len(saved["cases"]) == 4 and saved["run"]["n_requests"] == 4
    assert saved["metrics"]["post"]["nll"] < saved["metrics"]["pre"]["nll"]  # fine-tuning lowered target NLL
    assert saved["hparams"]["layers"] == [2]
    assert {"load_data", "load_model", "pre", "edit", "post", "restore", "total"} <= set(saved["timings_s"])
    assert saved["provenance"]["packages"]["torch"] and "hardware" in saved["provenance"]
    assert not out.with_name("r.json.ckpt").exists()  # checkpoint removed once the result is written
    assert all(torch.equal(p, before[n]) for n, p in tiny_lm.model.named_parameters())
    assert result["metrics"] == saved["metrics"]


def test_existing_output_needs_overwrite(tmp_path, loader):
    out = tmp_path / "r.json"
    out.write_text("{}")
    with pytest.raises(ConfigError, match="--overwrite"):
        Run(_cfg(), out, model_loader=loader)


def test_resume_skips_finished_work(tmp_path, loader):
    out = tmp_path / "r.json"
    _interrupted_before_final_evaluation(Run(_cfg(mode="sequential", batch_size=2), out, model_loader=loader))
    assert (out.with_name("r.json.ckpt") / "edits" / "step_00001" / "done.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        Run(_cfg(mode="sequential", batch_size=2), out, model_loader=loader)
    with pytest.raises(ConfigError, match="settings differ"):
        Run(_cfg(mode="sequential", batch_size=2, seed=1), out, resume=True, model_loader=loader)
    CALLS.clear()
    resumed = Run(_cfg(mode="sequential", batch_size=2), out, resume=True, model_loader=loader).execute()
    assert sum(CALLS) == 4  # only the post-edit evaluation ran again: pre-edit records came from the cache
    assert resumed["provenance"]["resumed"]
    assert len(resumed["editor_stats"]) == 2
    # both steps ran before the interruption: their recorded time, not this process's reload, makes s/edit
    stepped = sum(st["seconds"] for st in resumed["editor_stats"])
    assert resumed["timings_s"]["edit_resumed"] == pytest.approx(stepped)
    n = resumed["run"]["n_requests"]
    assert resumed["seconds_per_edit"] == pytest.approx((resumed["timings_s"]["edit"] + stepped) / n)


def test_pre_edit_records_shared_between_editors(tmp_path, loader):
    CALLS.clear()
    none = Run(_cfg(editor="none", hparam_overrides=()), tmp_path / "a.json", model_loader=loader).execute()
    assert sum(CALLS) == 4  # pre-edit evaluation only: `none` changes nothing, so its post records are those
    assert none["metrics"]["post"] == none["metrics"]["pre"] and "post" not in none["timings_s"]
    CALLS.clear()
    Run(_cfg(), tmp_path / "b.json", model_loader=loader).execute()
    assert sum(CALLS) == 4  # ft reused none's unedited-model records; only its post-edit evaluation ran


def test_run_refuses_a_restore_that_leaves_a_weight_changed(tmp_path, loader, monkeypatch):
    """One edited weight one ulp off after restore(): the run raises and writes no results."""
    restore = WeightEditHandle.restore

    def leaky(self):
        restore(self)
        weight = dict(self.model.named_parameters())[next(iter(self.originals))]
        with torch.no_grad():
            weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(float("inf")))

    monkeypatch.setattr(WeightEditHandle, "restore", leaky)
    out = tmp_path / "r.json"
    with pytest.raises(RuntimeError, match="bit-exact"):
        Run(_cfg(), out, model_loader=loader).execute()
    assert not out.exists()


def test_pre_edit_cache_misses_when_the_evaluation_code_changes(tmp_path, loader, monkeypatch):
    source = tmp_path / "metric.py"
    source.write_text("THRESHOLD = 5.0\n")
    monkeypatch.setattr(runner, "EVALUATION_SOURCES", (source,))
    none = _cfg(editor="none", hparam_overrides=())
    CALLS.clear()
    Run(none, tmp_path / "a.json", model_loader=loader).execute()
    Run(none, tmp_path / "b.json", model_loader=loader).execute()
    assert sum(CALLS) == 4  # the second run read the first's unedited-model records
    source.write_text("THRESHOLD = 4.0\n")
    CALLS.clear()
    Run(none, tmp_path / "c.json", model_loader=loader).execute()
    assert sum(CALLS) == 4  # a metric changed: the cached records were not reused
    assert len(list((tmp_path / "cache" / "pre_edit" / "toy").iterdir())) == 2


def test_bad_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'memit'"):
        _cfg(editor="memmit").validate()
    with pytest.raises(ConfigError, match="--batch-size"):
        _cfg(mode="sequential").validate()
    with pytest.raises(ConfigError, match="unknown mode"):
        _cfg(mode="stream").validate()


def test_unique_requests_dedupes_shared_rewrites():
    shared = EditRequest("{} is in", "X", "Y")
    cases = [EditCase("a", "t", (shared,)), EditCase("b", "t", (shared, EditRequest("{} is in", "Z", "W")))]
    assert [r.subject for r in case_requests(cases)] == ["X", "Z"]


def test_editors_get_the_suite_for_their_defaults(tmp_path, loader, monkeypatch):
    """The runner passes the suite it runs to `Editor.default_hparams`, so that a default may follow the suite
    (MeG trains on the suite's pool); --hparam overrides still come after."""
    from editors.none import NoneEditor

    seen: list[str] = []
    real = NoneEditor.default_hparams.__func__

    def spy(cls, model_name, suite=None, settings_file=None):
        seen.append(suite.name)
        return real(cls, model_name, suite, settings_file)

    monkeypatch.setattr(NoneEditor, "default_hparams", classmethod(spy))
    Run(_cfg(editor="none", hparam_overrides=()), tmp_path / "r.json", model_loader=loader).execute()
    assert seen == ["toy"]


def test_prepare_sees_the_unedited_model_even_on_resume(tmp_path, loader, tiny_lm, monkeypatch):
    """Statistics must come from the unedited model: prepare() runs before any step is applied or reloaded."""
    from editors.ft import FTEditor

    from kebench.models.loaded import exact_checksum

    original = exact_checksum(tiny_lm.model)
    seen: list[bool] = []
    monkeypatch.setattr(FTEditor, "prepare", lambda self, lm: seen.append(exact_checksum(lm.model) == original))
    out = tmp_path / "r.json"
    snapshot = {n: p.detach().clone() for n, p in tiny_lm.model.named_parameters()}
    _interrupted_before_final_evaluation(Run(_cfg(mode="sequential", batch_size=2), out, model_loader=loader))
    with torch.no_grad():  # the interrupted process is gone; the resuming one loads the unedited model
        for n, p in tiny_lm.model.named_parameters():
            p.copy_(snapshot[n])
    Run(_cfg(mode="sequential", batch_size=2), out, resume=True, model_loader=loader).execute()
    assert seen == [True, True]


def test_provenance_records_the_code_the_run_started_with(tmp_path, loader, monkeypatch):
    import kebench.runner as runner_mod

    checkout = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(runner_mod, "git_state", lambda: dict(checkout))

    def load_then_commit(cfg):  # the checkout moves on while the run is under way
        lm = loader(cfg)
        checkout.update(commit="b" * 40, dirty=True)
        return lm

    result = Run(_cfg(), tmp_path / "r.json", model_loader=load_then_commit).execute()
    assert result["provenance"]["git"] == {"commit": "a" * 40, "dirty": False}


def test_general_ability_measured_before_and_after_and_cached(tmp_path, loader, tiny_lm):
    result = Run(_cfg(general=True), tmp_path / "g.json", model_loader=loader).execute()
    general = result["metrics"]["general"]
    assert general["pre"]["perplexity"] > 1 and general["post"]["perplexity"] > 1
    assert general["pre"]["perplexity"] != general["post"]["perplexity"]  # the fine-tuned weights were measured
    assert set(general["protocol"]) >= {"perplexity", "retained_knowledge", "generic_fluency"}
    # a second editor on the same cases reuses the unedited measurement
    again = Run(_cfg(general=True, editor="none", hparam_overrides=()), tmp_path / "h.json", model_loader=loader).execute()
    assert again["metrics"]["general"]["pre"] == general["pre"]
    assert "general" not in again["timings_s"]  # cached, and `none` changes nothing to measure after
    assert again["metrics"]["general"]["post"]["perplexity"] == general["pre"]["perplexity"]


def test_eval_at_records_immediate_and_retention_points(tmp_path, loader):
    cfg = _cfg(mode="sequential", batch_size=1, eval_at="immediate,2")
    result = Run(cfg, tmp_path / "r.json", model_loader=loader).execute()
    retention = result["retention"]
    assert [p["cases"] for p in retention["points"]] == [2, 4]
    assert retention["points"][-1]["metrics"] == result["metrics"]["post"]  # the last point is the final evaluation
    assert set(retention["immediate"]) == set(result["metrics"]["post"])
    assert all("immediate" in c for c in result["cases"])
    # the first case, right after its own step, vs after all four steps: different models, different records
    first = result["cases"][0]
    assert first["immediate"]["nll"] != first["post"]["nll"]
    # evaluating between steps is not editing time
    assert result["timings_s"]["retention"] > 0


def test_eval_at_resumes_without_repeating_finished_evaluations(tmp_path, loader, tiny_lm):
    from kebench.models.loaded import LoadedModel, exact_checksum
    from tests.conftest import make_tiny_llama

    def loader(cfg):  # a fresh model per run, as a new process would load (the interrupted run never restores)
        model = make_tiny_llama()
        return LoadedModel(model, tiny_lm.tokenizer, "tiny-llama", exact_checksum(model), source="random")

    cfg = _cfg(mode="sequential", batch_size=1, eval_at="immediate,2")
    out = tmp_path / "r.json"
    done = _interrupted_before_final_evaluation(Run(cfg, out, model_loader=loader))
    full = json.loads(json.dumps(Run(cfg, tmp_path / "fresh.json", model_loader=loader).execute()))
    resumed = Run(cfg, out, resume=True, model_loader=loader).execute()
    assert resumed["retention"] == full["retention"]
    assert len(done) == 2 + 4 + 1  # the interrupted run got through reference, pre, four steps' cases and one point


def _load_shared(data_file, fmt):
    # the third case asks for the first case's edit again (MQuAKE's cases share edits): its step has nothing new
    shared = EditCase(case_id="4", suite="toy-shared", requests=CASES[0].requests, paraphrases=("Alice resides in",))
    cases = [CASES[0], CASES[1], shared, CASES[2]]
    return LoadedData(cases, [{"path": "toy", "sha256": "1" * 64, "format": "toy", "records": len(cases)}])


if "toy-shared" not in SUITES:
    SUITES.register("toy-shared", Suite("toy-shared", "test suite", _evaluate, _aggregate, headline=("efficacy",),
                                        loader=_load_shared))


def test_sequential_step_with_no_new_edit_is_evaluated_not_applied(tmp_path, loader):
    cfg = _cfg(dataset="toy-shared", mode="sequential", batch_size=1, eval_at="immediate,2")
    out = tmp_path / "r.json"
    _interrupted_before_final_evaluation(Run(cfg, out, model_loader=loader))
    steps = sorted(p.name for p in (out.with_name("r.json.ckpt") / "edits").iterdir())
    assert steps == ["step_00000", "step_00001", "step_00003"]  # the third step made no edit and saved none
    result = Run(cfg, out, resume=True, model_loader=loader).execute()
    assert [(st["step"], st["n_requests"]) for st in result["editor_stats"]] == [(0, 1), (1, 1), (3, 1)]
    assert result["run"]["n_requests"] == 3
    assert [p["cases"] for p in result["retention"]["points"]] == [2, 4]
    assert all("immediate" in c for c in result["cases"])  # the shared case was evaluated right after its step


@pytest.mark.parametrize("kw, message", [
    (dict(eval_at="immediate"), "--mode sequential"),
    (dict(mode="sequential", batch_size=2, eval_at="3"), "multiple of --batch-size 2"),
    (dict(mode="sequential", batch_size=2, eval_at="8"), "at most --scale 4"),
    (dict(mode="sequential", batch_size=2, eval_at="soon"), "neither 'immediate'"),
])
def test_eval_at_rejects_bad_schedules(kw, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**kw).validate()
