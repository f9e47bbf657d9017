"""AlphaEdit's closed-form update, restricted to the preserved keys' null space (float64).

    ΔW = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + L2·I)⁻¹

K: this batch's keys [d_ff, n]; R: residual [d, n]; P: null-space projector; K_p K_pᵀ: the
keys of earlier sequential batches (so new edits do not overwrite them). Solved in its
transposed form (P (K Kᵀ + K_p K_pᵀ) + L2·I) X = P K Rᵀ, ΔW = Xᵀ; X lies in P's range, so
ΔW k₀ = 0 for every k₀ with P k₀ = 0.
"""

from __future__ import annotations

import torch

from editors.memit.update import solve_system
from kebench.editor import check_finite


def alphaedit_delta(
    keys: torch.Tensor, resid: torch.Tensor, projector: torch.Tensor, prior: torch.Tensor | None, l2: float
) -> torch.Tensor:
    """ΔW [d, d_ff] for keys [d_ff, n] and residual [d, n]; `prior` = K_p K_pᵀ or None."""
    k, r, p = keys.double(), resid.double(), projector.double()
    gram = k @ k.T if prior is None else k @ k.T + prior.double()
    system = p @ gram + l2 * torch.eye(p.shape[0], dtype=torch.float64)
    x = solve_system(system, p @ k @ r.T, "AlphaEdit update")
    return check_finite("AlphaEdit update", x.T)
