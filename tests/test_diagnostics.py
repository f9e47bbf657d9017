"""Collapse diagnostics of weight edits: the numbers on known matrices, the NaN/Inf guard through
the real editor path, and the per-step records of real tiny FT / MEMIT / runner runs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pytest
import torch

from editors.ft import FTEditor, FTHParams
from editors.memit import MEMITEditor
from kebench.data.case import EditRequest
from kebench.diagnostics import condition_number, record_step, step_diagnostics, summary_line
from kebench.editor import WeightEditHandle
from kebench.errors import NumericalError
from kebench.models.loaded import LoadedModel, exact_checksum
from kebench.runner import Run

from tests.editors.test_memit import TOY, _sharpen, _tiny_hparams
from tests.test_runner import _cfg, loader  # noqa: F401  (fixture)

KEYS = {"update_norm", "rel_update", "norm_growth", "cond", "total_growth", "total_drift", "cond_unedited"}
REQS = [EditRequest("{} is located in", "The Eiffel Tower", "Rome"), EditRequest("{} was written by", "Hamlet", "Tolstoy")]
FT_HP = FTHParams(layers=(2,), lr=1e-2, steps=3, norm_constraint=0.05)


def _diag(d: Sequence[float]) -> torch.Tensor:
    """A 3x5 matrix with `d` on its diagonal: singular values |d|."""
    w = torch.zeros(3, 5)
    w[range(3), range(3)] = torch.tensor(d)
    return w


# --------------------------------------------------------------------------- the numbers


def test_condition_number_of_a_diagonal_matrix():
    assert condition_number(_diag([1.0, 2.0, 4.0])) == pytest.approx(4.0)
    assert condition_number(_diag([3.0, -3.0, 3.0])) == pytest.approx(1.0)
    assert condition_number(_diag([1.0, 2.0, 0.0])) is None  # singular: no finite value (and JSON has no inf)


def test_a_zero_update_keeps_everything():
    w = _diag([1.0, 2.0, 4.0]).half()
    d = step_diagnostics("w", w, w.clone())
    assert set(d) == KEYS
    assert d["update_norm"] == 0 and d["rel_update"] == 0 and d["total_drift"] == 0
    assert d["norm_growth"] == 1 and d["total_growth"] == 1
    assert d["cond"] == d["cond_unedited"] == pytest.approx(4.0)


def test_growth_and_drift_per_step_and_since_the_unedited_matrix():
    w0 = _diag([1.0, 2.0, 4.0])
    d = step_diagnostics("w", 2 * w0, 3 * w0, unedited=w0)
    assert d["update_norm"] == pytest.approx(float(w0.norm()))
    assert d["rel_update"] == pytest.approx(0.5) and d["norm_growth"] == pytest.approx(1.5)
    assert d["total_growth"] == pytest.approx(3.0) and d["total_drift"] == pytest.approx(2.0)
    assert d["cond"] == pytest.approx(4.0) and d["cond_unedited"] == pytest.approx(4.0)
    # a rank-one update along the smallest direction changes the spectrum
    after = w0.clone()
    after[0, 0] = 0.5
    d = step_diagnostics("w", w0, after, cond_unedited=4.0)
    assert d["cond"] == pytest.approx(8.0) and d["norm_growth"] < 1
    assert d["update_norm"] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_a_numerical_error_naming_step_and_parameter(bad):
    w = _diag([1.0, 2.0, 4.0])
    after = w.clone()
    after[1, 4] = bad
    with pytest.raises(NumericalError, match=r"^memit step 3: the edited weights of layers\.1\.w contain 1 NaN/Inf"):
        step_diagnostics("layers.1.w", w, after, where="memit step 3")


def test_summary_line_takes_the_largest_values_over_steps_and_matrices():
    def step(growth: float, cond: float) -> dict:
        d = dict.fromkeys(KEYS, 0.0) | {"total_growth": growth, "total_drift": growth - 1, "cond": cond, "cond_unedited": 10.0}
        return {"n_requests": 1, "stats": {"weight_diagnostics": {"a": d, "b": d | {"cond": None}}}}

    line = summary_line([step(1.01, 12.0), step(1.5, 40.0), step(1.2, 20.0)])
    assert line == "edited weights, largest over steps: norm growth x1.5, drift 0.5, condition number 40 (unedited 10)"
    assert summary_line([{"n_requests": 1, "stats": {"n_edits": 1}}]) is None


# --------------------------------------------------------------------------- through editors and the runner


def _scale(lm: LoadedModel, name: str, factor: float) -> WeightEditHandle:
    """A stand-in weight edit: multiplies one matrix."""
    handle = WeightEditHandle(lm.model, [name])
    with torch.no_grad():
        dict(lm.model.named_parameters())[name].mul_(factor)
    return handle


def test_sequential_steps_count_from_the_unedited_matrix(tiny_lm):
    name = tiny_lm.adapter.mlp_out_param_name(1)
    original = exact_checksum(tiny_lm.model)
    steps: list[WeightEditHandle] = []
    cache: dict = {}
    for k in range(3):
        handle = _scale(tiny_lm, name, 2.0)
        record_step(handle, steps, f"scale step {k}", cache)
        steps.append(handle)
    d = [h.stats["weight_diagnostics"][name] for h in steps]
    assert [x["norm_growth"] for x in d] == pytest.approx([2, 2, 2])
    assert [x["total_growth"] for x in d] == pytest.approx([2, 4, 8])
    assert [x["total_drift"] for x in d] == pytest.approx([1, 3, 7])
    assert [x["rel_update"] for x in d] == pytest.approx([1, 1, 1])
    assert d[2]["cond"] == pytest.approx(d[0]["cond_unedited"], rel=1e-4)  # scaling keeps the spectrum's shape
    for h in reversed(steps):
        h.restore()
    assert exact_checksum(tiny_lm.model) == original


def test_an_edit_that_is_not_a_weight_edit_records_nothing(tiny_lm):
    class Conditioning:
        stats: dict = {}

    record_step(Conditioning(), [], "meg step 0", {})
    assert Conditioning.stats == {}


def test_ft_diagnostics_describe_its_update(tiny_lm):
    name = tiny_lm.adapter.mlp_out_param_name(2)
    handle = FTEditor(FT_HP).apply(tiny_lm, REQS)
    edited = handle.edited_state()
    record_step(handle, [], "ft step 0", {})
    d = handle.stats["weight_diagnostics"][name]
    assert set(handle.stats["weight_diagnostics"]) == {name} and set(d) == KEYS
    assert handle.stats["loss_last"] < handle.stats["loss_first"]  # FT's own stats are kept
    delta = (edited[name] - handle.originals[name]).double()
    assert d["update_norm"] == pytest.approx(float(delta.norm()), rel=1e-5)
    assert d["rel_update"] > 0 and d["total_drift"] == d["rel_update"] and d["cond"] > 1
    assert all(torch.equal(edited[n], t) for n, t in handle.edited_state().items())  # only read
    handle.restore()


def test_nan_written_by_ft_undoes_the_step_and_names_step_and_parameter(tiny_lm, monkeypatch):
    class NaNAdam(torch.optim.Adam):
        def step(self, closure=None):
            out = super().step(closure)
            with torch.no_grad():
                self.param_groups[0]["params"][0][0, 0] = float("nan")
            return out

    monkeypatch.setattr(torch.optim, "Adam", NaNAdam)
    name = tiny_lm.adapter.mlp_out_param_name(2)
    original = exact_checksum(tiny_lm.model)
    handle = FTEditor(dataclasses.replace(FT_HP, steps=1)).apply(tiny_lm, REQS)
    with pytest.raises(NumericalError, match=rf"^ft step 0: the edited weights of {name} contain 1 NaN/Inf"):
        record_step(handle, [], "ft step 0", {})
    assert exact_checksum(tiny_lm.model) == original


def test_memit_records_diagnostics_for_every_edit_layer(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path))
    lm = _sharpen(tiny_lm)
    handle = MEMITEditor(_tiny_hparams(v_num_grad_steps=5)).apply(lm, TOY)
    record_step(handle, [], "memit step 0", {})
    found = handle.stats["weight_diagnostics"]
    assert list(found) == [lm.adapter.mlp_out_param_name(l) for l in (1, 2)]
    for layer, (name, d) in zip((1, 2), found.items()):
        assert set(d) == KEYS and all(v is not None and v == v for v in d.values())
        assert d["update_norm"] > 0 and d["total_growth"] == d["norm_growth"]
        solved = next(u for u in handle.stats["layer_updates"] if u["layer"] == layer)["update_norm"]
        assert d["update_norm"] == pytest.approx(solved, rel=1e-3)  # the float64 solve, as stored in float32
    handle.restore()


def test_sequential_run_records_diagnostics_per_step_and_the_summary_shows_them(tmp_path, loader, capsys):  # noqa: F811
    from kebench.cli import _print_summary
    from kebench.results import RunResult

    out = tmp_path / "r.json"
    result = Run(_cfg(mode="sequential", batch_size=2), out, model_loader=loader).execute()
    steps = [s["stats"]["weight_diagnostics"] for s in json.loads(out.read_text())["editor_stats"]]
    assert len(steps) == 2 and all(len(s) == 1 for s in steps)
    first, second = (next(iter(s.values())) for s in steps)
    assert first["total_growth"] == first["norm_growth"]
    assert second["total_growth"] == pytest.approx(first["norm_growth"] * second["norm_growth"], rel=1e-4)
    assert second["cond_unedited"] == first["cond_unedited"]
    capsys.readouterr()
    _print_summary(RunResult.from_json(result))
    assert summary_line(result["editor_stats"]) in " ".join(capsys.readouterr().out.split())  # as rich wraps it
