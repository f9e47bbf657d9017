"""MeG stages on the real default model (SmolLM2-135M) and real CounterFact edits (slow)."""

from __future__ import annotations

import pytest
import torch

from kebench.scoring import score_targets
from kebench.suites import load_cases
from editors.meg import MeGEditor
from editors.meg.fitting import evaluate_neurons, fit_neurons
from editors.meg.neuron import DynamicNeuron, NeuronSpec

pytestmark = pytest.mark.integration


def test_real_neurons_state_new_facts_and_zero_neurons_change_nothing(real_lm):
    hp = MeGEditor.default_hparams("default")
    layer = hp.layer_for(real_lm.adapter.num_layers)
    requests = [c.request for c in load_cases("counterfact")[:4]]
    spec = NeuronSpec(real_lm.adapter.hidden_size, hp.activation)
    res = fit_neurons(real_lm, requests, spec, layer, context_prefixes=hp.fitting.context_prefixes)
    assert res.converged.all() and res.efficacy.all()
    assert not res.baseline_efficacy.any()
    ok, _ = evaluate_neurons(real_lm, requests, spec, layer, res.vectors)
    assert ok.all()

    prompts, targets = [r.text for r in requests], [r.target_new for r in requests]
    before = [s.token_logprobs for s in score_targets(real_lm, prompts, targets)]
    neuron = DynamicNeuron(real_lm.adapter.mlp(layer), spec)
    with neuron, neuron.vectors(torch.zeros(len(prompts), spec.size)):
        zero = [s.token_logprobs for s in score_targets(real_lm, prompts, targets)]
    assert zero == before
