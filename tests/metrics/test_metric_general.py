"""General ability: held-out perplexity, retained known facts, generic fluency (kebench.metrics.general)."""

from __future__ import annotations

import math

import pytest
import torch

from kebench.data.corpus import wikitext_paragraphs
from kebench.metrics import general
from kebench.metrics.general import KnownFact, known_correct, known_facts, perplexity, perplexity_windows, summarise
from kebench.scoring import greedy_generate


def test_known_facts_are_romes_1209():
    facts = known_facts()
    assert len(facts) == 1209 and len({f.known_id for f in facts}) == 1209
    assert facts[0].prompt == "Vinson Massif is located in the continent of" and facts[0].attribute == "Antarctica"


def test_perplexity_slice_is_the_end_of_the_clean_split_and_held_out_from_statistics(tokenizer):
    windows = perplexity_windows(tokenizer)
    assert len(windows) == general.PERPLEXITY_TOKENS // general.PERPLEXITY_WINDOW
    assert all(len(w) == general.PERPLEXITY_WINDOW for w in windows)
    last = wikitext_paragraphs(unk_free=True)[-1]
    assert tokenizer.decode(windows[-1]).rstrip().endswith(last[-40:])
    # MEMIT/AlphaEdit statistics read the first stats_n_tokens tokens of the same text: they must stop before it
    from kebench.editor import EDITORS

    for name in ("memit", "alphaedit"):
        assert EDITORS.get(name).default_hparams("default").stats_n_tokens < general.held_out_start(tokenizer)


def test_perplexity_matches_a_direct_computation(tiny_lm):
    windows = [list(range(100, 140)), list(range(200, 230))]
    got = perplexity(tiny_lm, windows, batch_size=2)
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = tiny_lm.model(input_ids=torch.tensor([w])).logits[0, :-1].double()
            lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(w[1:])[:, None])
            nll -= float(lp.sum())
            n += len(w) - 1
    assert got == pytest.approx(math.exp(nll / n), rel=1e-9)


def test_a_fact_is_known_exactly_when_greedy_generation_begins_with_it(tiny_lm, push_word):
    facts = [KnownFact(0, "Vinson Massif", "Vinson Massif is located in the continent of", "Paris"),
             KnownFact(1, "Giuseppe Angeli", "Giuseppe Angeli, who has a citizenship of", "Italy")]
    condition = push_word("Paris")  # the model now says " Paris" after everything
    assert known_correct(tiny_lm, facts, condition=condition) == [0]
    generated = greedy_generate(tiny_lm, [f.prompt for f in facts], max_new_tokens=3, condition=condition)
    assert [g.startswith(" " + f.attribute) for g, f in zip(generated, facts)] == [True, False]
    assert known_correct(tiny_lm, facts) == []  # the random model knows neither


def _record(ppl, ids, fluency=5.0):
    return {"perplexity": ppl, "known_ids": ids, "generic_fluency": fluency}


def test_retained_knowledge_leaves_out_facts_whose_subject_was_edited():
    facts = known_facts()
    subject = facts[0].subject
    pre = _record(40.0, [facts[0].known_id, facts[1].known_id, facts[2].known_id, facts[3].known_id])
    post = _record(41.0, [facts[2].known_id])  # lost facts 0 (edited subject), 1 and 3
    block = summarise(pre, post, [subject.upper()])  # subjects match case-insensitively
    assert block["facts_left_out"] >= 1 and block["pre"]["known_facts"] == 3
    assert block["post"]["retained_knowledge"] == pytest.approx(1 / 3)
    assert block["forgotten_ids"] == sorted([facts[1].known_id, facts[3].known_id])
    assert block["alarm"] is None


@pytest.mark.parametrize("after, words", [(float("nan"), "nan"), (float("inf"), "inf"), (95.0, "2.4x")])
def test_a_broken_or_collapsed_model_raises_the_alarm(after, words):
    block = summarise(_record(40.0, [0]), _record(after, []), [])
    assert block["alarm"] and words in block["alarm"].lower()


def test_no_known_facts_means_retention_is_not_measured():
    assert summarise(_record(40.0, []), _record(40.0, []), [])["post"]["retained_knowledge"] is None


def test_measure_on_a_nan_model_reports_instead_of_crashing(tiny_lm):
    original = tiny_lm.model.model.norm.weight.clone()
    try:
        with torch.no_grad():
            tiny_lm.model.model.norm.weight.fill_(float("nan"))
        record = general.measure(tiny_lm)
    finally:
        with torch.no_grad():
            tiny_lm.model.model.norm.weight.copy_(original)
    assert math.isnan(record["perplexity"]) and record["known_ids"] == []


def test_compare_shows_general_ability_after_the_suites_metrics(tmp_path):
    import json
    from pathlib import Path

    from kebench.compare import comparison_tables, load_result

    data = json.loads((Path(__file__).parents[2] / "results/ci/counterfact-ft-n50.json").read_text())
    data["metrics"]["general"] = {
        "pre": {"perplexity": 41.3, "known_facts": 279, "generic_fluency": 5.33},
        "post": {"perplexity": 95.0, "retained_knowledge": 0.5, "generic_fluency": 4.0},
    }
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    (_, header, rows), = comparison_tables([load_result(path)])
    cells = dict(zip(header, rows[0]))
    assert header.index("perplexity") > header.index("score")
    assert cells["perplexity"] == "95.00 (41.30)" and cells["retained_knowledge"] == "50.0"
    assert cells["generic_fluency"] == "4.00 (5.33)"
