"""Familiarity gate: low entropy on edit queries, high on unrelated ones; τ calibrated on held-out data."""

from __future__ import annotations

import pytest
import torch

from editors.meg.familiarity import FamiliarityNet, calibrate_tau, fake_classes, tradeoff, train_familiarity
from kebench.errors import ConfigError
from tests.editors.test_meg_encoder import tiny_encoder

EDITS = [
    "The mother tongue of Danielle Darrieux is",
    "The official religion of Edwin of Northumbria is",
    "Toko Yasuda plays the instrument",
    "Autonomous University of Madrid is located in the country of",
    "What is the twin city of Lyon? It is",
    "Thomas Joannes Stieltjes was born in",
]
OTHER = ["Albert Einstein", "the Amazon river", "Microsoft", "Angela Merkel", "Mount Fuji", "the Beatles", "Nokia",
         "Lionel Messi", "the Louvre", "Marie Curie", "Pablo Picasso", "the Nile", "Google", "Mozart", "Sydney"]
TEMPLATES = ["{} was founded in", "The headquarters of {} is in", "{} is famous for", "People say that {} likes",
             "{} was created by", "Where is {} located? In"]


def _unrelated(subjects: list[str]) -> list[str]:
    return [t.format(s) for s in subjects for t in TEMPLATES]


def test_familiarity_fires_on_edits_and_not_on_unrelated_queries():
    torch.manual_seed(0)
    enc = tiny_encoder()
    pos = enc.encode(EDITS)
    neg_train = enc.encode(_unrelated(OTHER[:10]))
    neg_held = enc.encode(_unrelated(OTHER[10:]))
    net = FamiliarityNet(enc.dim, classes=10, hidden=64, blocks=2)
    labels = fake_classes(len(EDITS), 10, seed=0)
    train_familiarity(net, pos, labels, neg_train, steps=300, lr=3e-3, seed=0)
    h_pos, h_neg = net.entropy(pos), net.entropy(neg_held)
    assert h_pos.max() < 0.5 < h_neg.mean()
    tau = calibrate_tau(h_neg, alpha=0.1)
    assert int((h_neg < tau).sum()) <= int(0.1 * len(h_neg))
    assert float((h_pos < tau).float().mean()) == 1.0
    assert net(pos).argmax(-1).tolist() == labels.tolist()


def test_calibrate_tau_is_the_largest_threshold_within_alpha():
    h = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 1.1, 1.3, 1.5, 1.7, 1.9])
    tau = calibrate_tau(h, alpha=0.2)  # two of ten may fire
    assert tau == 0.5 and int((h < tau).sum()) == 2  # the third-smallest entropy
    assert int((h < tau + 1e-3).sum()) == 3
    tau0 = calibrate_tau(h, alpha=0.0)
    assert tau0 == float(h[1]) and int((h < tau0).sum()) == 0


def test_tradeoff_is_monotone():
    grid = tradeoff(torch.rand(50) * 0.5, torch.rand(50) + 1.0, points=11)
    pos = [g["fire_positive"] for g in grid]
    neg = [g["fire_negative"] for g in grid]
    assert pos == sorted(pos) and neg == sorted(neg)
    assert grid[0]["fire_positive"] == 0.0 and grid[-1]["fire_negative"] == 1.0 and grid[-1]["fire_positive"] == 1.0


def test_similarity_gate_scores_distance_to_the_nearest_edit_query():
    from editors.meg.familiarity import SimilarityGate

    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=-1)
    gate = SimilarityGate(bank)
    assert torch.allclose(gate.score(bank), torch.zeros(50), atol=1e-5)  # every edit query is familiar
    near = torch.nn.functional.normalize(bank[:5] + 0.05 * torch.randn(5, 16, generator=g), dim=-1)
    far = torch.nn.functional.normalize(torch.randn(200, 16, generator=g), dim=-1)
    assert gate.score(near).max() < gate.score(far).median()
    assert torch.allclose(gate.score(far, chunk=7), gate.score(far))  # chunking changes nothing
    with pytest.raises(ConfigError):
        SimilarityGate(torch.zeros(0, 16))


def test_the_editors_gate_net_follows_the_seed_not_what_ran_before():
    from editors.meg.config import MeGHParams
    from editors.meg.editor import MeGEditor
    from kebench.config import with_overrides

    gen = torch.Generator().manual_seed(1)
    emb_q = torch.nn.functional.normalize(torch.randn(6, 16, generator=gen), dim=-1)
    emb_aug = emb_q.repeat_interleave(2, 0) + 0.05 * torch.randn(12, 16, generator=gen)
    cond, cond_edit = torch.cat([emb_q, emb_aug]), torch.cat([torch.arange(6), torch.arange(6).repeat_interleave(2)])
    emb_neg, emb_held = torch.randn(20, 16, generator=gen), torch.randn(20, 16, generator=gen)
    editor = MeGEditor(with_overrides(MeGHParams(), {"gate.steps": 20, "gate.hidden": 32, "gate.classes": 3}))

    def gate():
        net, tau, _ = editor._familiarity("net", 16, 6, emb_q, emb_aug, cond, cond_edit, emb_neg, emb_held,
                                          torch.device("cpu"))
        return net, tau

    first, tau = gate()
    torch.rand(1000)  # another stage drew from the global generator in between
    again, tau_again = gate()
    assert tau == tau_again
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))
