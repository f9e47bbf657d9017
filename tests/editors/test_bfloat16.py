"""Every editor runs on a bfloat16 model (`--dtype bfloat16`): same code path as float32, edits land,
restore is bit-exact. Solves stay in float64 inside; only the model's own tensors are bf16."""

from __future__ import annotations

import pytest
import torch

from editors.alphaedit import AlphaEditEditor
from editors.ft import FTEditor, FTHParams
from editors.meg import MeGEditor
from editors.memit import MEMITEditor
from kebench.models.loaded import LoadedModel, exact_checksum
from kebench.suites import load_cases
from tests.conftest import make_tiny_llama
from tests.editors.test_alphaedit import _hparams as alphaedit_hparams
from tests.editors.test_meg_editor import small
from tests.editors.test_memit import TOY, _nll, _tiny_hparams


@pytest.fixture
def bf16_lm(smol_tokenizer, tmp_path, monkeypatch) -> LoadedModel:
    monkeypatch.setenv("KEBENCH_CACHE", str(tmp_path))
    model = make_tiny_llama()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(30.0)  # lets a d=32 model single out a token
    model = model.to(torch.bfloat16)
    return LoadedModel(model, smol_tokenizer, "tiny-llama-bf16", exact_checksum(model), source="random")


@pytest.mark.parametrize(
    "make",
    [
        lambda: MEMITEditor(_tiny_hparams()),
        lambda: AlphaEditEditor(alphaedit_hparams()),
        lambda: FTEditor(FTHParams(layers=(2,), lr=1e-2, steps=20, norm_constraint=0.05)),
    ],
    ids=["memit", "alphaedit", "ft"],
)
def test_weight_editors_edit_a_bf16_model_and_restore_it_bit_exact(make, bf16_lm):
    original = exact_checksum(bf16_lm.model)
    before = _nll(bf16_lm, TOY)
    editor = make()
    editor.prepare(bf16_lm)
    handle = editor.apply(bf16_lm, TOY)
    after = _nll(bf16_lm, TOY)
    assert all(p.dtype == torch.bfloat16 for p in bf16_lm.model.parameters())
    assert torch.isfinite(after).all() and (after < before).all(), (before, after)
    if not isinstance(editor, FTEditor):  # the locate-then-edit solvers make the edits, not just nudge them
        assert (after < before - 5.0).all(), (before, after)
    handle.restore()
    assert exact_checksum(bf16_lm.model) == original


def test_meg_edits_a_bf16_model_through_its_neuron_hook(bf16_lm, encoder_dir):
    cases = load_cases("counterfact")[:4]
    original = exact_checksum(bf16_lm.model)
    handle = MeGEditor(small(encoder_dir, generator={"kind": "knn"}, gate={"alpha": 0.0})).apply(bf16_lm, [c.request for c in cases])
    assert handle.stats["oracle_efficacy"] == 1.0 and handle.stats["generated_efficacy"] == 1.0
    handle.restore()
    assert exact_checksum(bf16_lm.model) == original
