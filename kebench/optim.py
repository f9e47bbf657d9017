"""Adam over the rows of one matrix, each row an independent optimisation.

Batched fitting (MEMIT/AlphaEdit target values, MeG neurons) optimises many edits' vectors as
the rows of one tensor in one forward/backward. torch.optim.Adam would share one step count
and keep moving a converged row on momentum alone; here each row has its own step count and a
row that is not stepped is frozen exactly where it left off, so a batch behaves like the same
edits fitted one at a time.
"""

from __future__ import annotations

import torch


class RowAdam:
    """Adam for `params` [n_rows, d], updated in place; `step` moves only the rows given."""

    def __init__(self, params: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = torch.zeros_like(params)
        self.v = torch.zeros_like(params)
        self.t = torch.zeros(params.shape[0], dtype=params.dtype, device=params.device)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, rows: torch.Tensor) -> None:
        """One Adam step of `rows` with their gradients `grad` [len(rows), d]."""
        b1, b2 = self.betas
        self.t[rows] += 1
        t = self.t[rows][:, None]
        self.m[rows] = b1 * self.m[rows] + (1 - b1) * grad
        self.v[rows] = b2 * self.v[rows] + (1 - b2) * grad * grad
        m_hat = self.m[rows] / (1 - b1**t)
        v_hat = self.v[rows] / (1 - b2**t)
        self.params[rows] -= self.lr * m_hat / (v_hat.sqrt() + self.eps)
