"""The projector onto the null space of the preserved keys' second moment C₀ (AlphaEdit's P).

An update ΔW = X P with P the projector onto C₀'s (near-)null space leaves ΔW k₀ ≈ 0 for the
keys k₀ that C₀ summarises: their energy lies in the directions P removes. The near-null
space is spanned by C₀'s eigenvectors whose eigenvalues fall below an absolute threshold
(the authors take singular values of C₀ below `nullspace_threshold`; for a symmetric PSD
matrix eigenvalues and singular values coincide, and `eigh` is cheaper and exactly symmetric).
"""

from __future__ import annotations

import torch

from kebench.editor import check_finite


def null_space_projector(cov: torch.Tensor, threshold: float) -> tuple[torch.Tensor, int]:
    """P = U₀ U₀ᵀ (float64) over C₀'s eigenvectors with eigenvalue < threshold, and its rank."""
    evals, evecs = torch.linalg.eigh(check_finite("key covariance", cov.double()))
    basis = evecs[:, evals < threshold]
    return basis @ basis.T, int(basis.shape[1])
