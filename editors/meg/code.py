"""The neuron code: a compact, whitened coordinate system for MeG's neurons, in which the generator diffuses.

A neuron is `mean + ((code · scales) @ components) · std`: per-dimension standardisation, then the leading
principal directions of the standardised neurons, each code entry of unit variance over the neurons the
code was built from. Built from a set of fitted neurons (`NeuronCode.pca`), it serves either as a
truncated PCA of those neurons or as the fixed low-rank subspace in which further neurons are fitted
directly (their codes are then exact, not truncated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kebench.errors import ConfigError


@dataclass
class NeuronCode:
    mean: torch.Tensor  # [neuron]
    std: torch.Tensor  # [neuron]
    components: torch.Tensor  # [size, neuron], orthonormal rows
    scales: torch.Tensor  # [size]: each direction's standard deviation over the neurons it was built from

    @classmethod
    def pca(cls, vectors: torch.Tensor, size: int, floor: float = 0.05) -> NeuronCode:
        """The leading `size` principal directions of the standardised `vectors` (computed in float64)."""
        x = vectors.double()
        if len(x) < 2:
            raise ConfigError("a neuron code needs at least two fitted neurons")
        size = min(size, len(x) - 1, x.shape[1])
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        std = std.clamp(min=floor * float(std.median()) if float(std.median()) > 0 else 1e-8)
        _, s, vh = torch.linalg.svd((x - mean) / std, full_matrices=False)
        scales = (s[:size] / len(x) ** 0.5).clamp(min=1e-8)
        return cls(mean.float(), std.float(), vh[:size].float().contiguous(), scales.float())

    @property
    def size(self) -> int:
        return self.components.shape[0]

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """Codes of `vectors` (their projection onto the code's directions)."""
        z = (vectors.float() - self.mean) / self.std
        return (z @ self.components.T) / self.scales

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return ((codes.float() * self.scales.to(codes.device)) @ self.components.to(codes.device)) * self.std.to(
            codes.device
        ) + self.mean.to(codes.device)

    def energy(self, vectors: torch.Tensor) -> float:
        """Fraction of the standardised vectors' variance (about their mean) the code keeps."""
        z = (vectors.float() - self.mean) / self.std
        z = z - z.mean(0)
        kept = (z @ self.components.T).pow(2).sum()
        return float(kept / z.pow(2).sum().clamp(min=1e-12))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std, "components": self.components, "scales": self.scales}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> NeuronCode:
        return cls(state["mean"], state["std"], state["components"], state["scales"])


def relative_error(generated: torch.Tensor, fitted: torch.Tensor) -> torch.Tensor:
    """Per-neuron relative L2 error ‖generated − fitted‖ / ‖fitted‖."""
    return (generated.float() - fitted.float()).norm(dim=-1) / fitted.float().norm(dim=-1).clamp(min=1e-12)
