"""MeG's familiarity network (stage 2): fire the neuron only for queries about an edit.

As in the paper, every edit query gets a random *fake* class out of K and an MLP over the
query embedding learns them; a query is familiar iff the softmax entropy is below τ.
Two fixes from MEG.md §10.3: the net also sees explicit negatives (unrelated queries from
a disjoint pool) trained toward the uniform distribution (maximum entropy), and τ is not
hand-set but calibrated on *held-out* unrelated queries: the largest τ whose false-fire
rate there stays ≤ α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from kebench.editor import check_finite
from kebench.errors import ConfigError
from kebench.progress import progress_bar


class _Residual(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class FamiliarityNet(nn.Module):
    """Residual MLP: (L2-normalised) query embedding -> K fake-class logits."""

    def __init__(self, dim: int, classes: int = 10, hidden: int = 1024, blocks: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        if classes < 2:
            raise ConfigError(f"familiarity_classes must be >= 2 (entropy needs several classes), got {classes}")
        self.dim, self.classes, self.hidden, self.n_blocks = dim, classes, hidden, blocks
        self.blocks = nn.Sequential(*[_Residual(dim, hidden, dropout) for _ in range(blocks)])
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(emb))

    @torch.no_grad()
    def entropy(self, emb: torch.Tensor) -> torch.Tensor:
        """Softmax entropy per query (nats; max ln K): low = familiar."""
        was_training = self.training
        self.eval()
        logp = torch.log_softmax(self(emb.to(next(self.parameters()).device)).float(), dim=-1)
        self.train(was_training)
        return -(logp.exp() * logp).sum(-1).cpu()

    def score(self, emb: torch.Tensor) -> torch.Tensor:
        """The gate's score (low = familiar): the entropy."""
        return self.entropy(emb)


class SimilarityGate(nn.Module):
    """A non-parametric familiarity gate: score = 1 − the largest cosine similarity between the query
    and any edit query (or augmented edit query); familiar iff score < τ, τ calibrated like the net's.

    The paper's fake-class net has to *learn* membership of every edit; at 1,000 CounterFact edits on
    SmolLM2 it fired on only about half of the paraphrases at a 5% held-out false-fire rate (the
    contrastively tuned encoder already places paraphrases next to their originals; this gate uses
    that directly). Memory grows with the edits: one embedding per condition.
    """

    def __init__(self, bank: torch.Tensor) -> None:
        super().__init__()
        if len(bank) == 0:
            raise ConfigError("the similarity gate needs at least one edit query")
        self.register_buffer("bank", nn.functional.normalize(bank.float(), dim=-1))
        self.dim = bank.shape[1]

    @torch.no_grad()
    def score(self, emb: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """1 − max cosine similarity to the bank, per query (0 = an edit query itself)."""
        q = nn.functional.normalize(emb.float().to(self.bank.device), dim=-1)
        best = torch.cat([(q[i : i + chunk] @ self.bank.T).max(dim=1).values for i in range(0, len(q), chunk)])
        return (1.0 - best).cpu()


def fake_classes(n: int, classes: int, seed: int) -> torch.Tensor:
    """A random fake class per edit (the paper's targets), reproducible from the seed."""
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def train_familiarity(
    net: FamiliarityNet,
    positives: torch.Tensor,
    labels: torch.Tensor,
    negatives: torch.Tensor,
    *,
    steps: int = 400,
    lr: float = 1e-3,
    batch_size: int = 512,
    negative_weight: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Positives -> their fake class (CE); negatives -> uniform (CE against 1/K, i.e. max entropy).

    `noise` jitters positive embeddings (then re-normalises), widening each edit's familiar
    region toward its paraphrases.
    """
    if len(positives) == 0:
        raise ConfigError("familiarity training needs at least one edit query")
    gen = torch.Generator().manual_seed(seed)
    dev = next(net.parameters()).device
    positives, labels, negatives = positives.to(dev), labels.to(dev), negatives.to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    last = float("nan")
    with progress_bar("MeG: training familiarity", steps) as bar:
        for _ in range(steps):
            p_idx = torch.randint(0, len(positives), (min(batch_size, len(positives)),), generator=gen).to(dev)
            pos = positives[p_idx]
            if noise > 0:
                jitter = torch.randn(pos.shape, generator=gen).to(dev) / pos.shape[-1] ** 0.5
                pos = nn.functional.normalize(pos + noise * jitter, dim=-1)
            loss = nn.functional.cross_entropy(net(pos), labels[p_idx])
            if len(negatives):
                n_idx = torch.randint(0, len(negatives), (min(batch_size, len(negatives)),), generator=gen).to(dev)
                logp = torch.log_softmax(net(negatives[n_idx]), dim=-1)
                loss = loss + negative_weight * (-logp.mean(-1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = loss.item()
            bar.advance()
    net.eval()
    check_finite("familiarity loss", torch.tensor(last))
    return {"familiarity_loss": last}


def calibrate_tau(heldout_negative_entropy: torch.Tensor, alpha: float) -> float:
    """Largest τ with #{H < τ} ≤ α·m on held-out unrelated queries (fire iff H < τ)."""
    if not 0 <= alpha < 1:
        raise ConfigError(f"familiarity_alpha must be in [0, 1), got {alpha}")
    h = torch.sort(heldout_negative_entropy.float()).values
    if len(h) == 0:
        raise ConfigError("calibrating τ needs held-out unrelated queries; the pool gave none")
    allowed = math.floor(alpha * len(h))  # this many negatives may fire
    return float(h[allowed]) if allowed < len(h) else float("inf")


def tradeoff(
    positive_entropy: torch.Tensor, negative_entropy: torch.Tensor, taus: Sequence[float] | None = None, points: int = 21
) -> list[dict[str, float]]:
    """Firing rate on edit-like queries vs false-fire rate on unrelated ones over a τ grid (for reports)."""
    if taus is None:  # quantiles of all entropies: entropies crowd near ln K, so an even grid says little
        both = torch.cat([positive_entropy, negative_entropy]).float()
        levels = torch.linspace(0, 1, points)
        taus = torch.quantile(both, levels).tolist() if len(both) else levels.tolist()
        taus[-1] = taus[-1] + 1e-6  # the last point fires on everything
    return [
        {
            "tau": float(t),
            "fire_positive": float((positive_entropy < t).float().mean()) if len(positive_entropy) else float("nan"),
            "fire_negative": float((negative_entropy < t).float().mean()) if len(negative_entropy) else float("nan"),
        }
        for t in taus
    ]
