"""AlphaEdit's hyperparameters: the shared locate-then-edit ones plus the null-space settings."""

from __future__ import annotations

from dataclasses import dataclass

from editors.memit.hparams import LocateEditHParams
from kebench.errors import ConfigError


@dataclass(frozen=True)
class AlphaEditHParams(LocateEditHParams):
    """nullspace_threshold: eigenvalues of C₀ below it span the preserved-knowledge null space
    (absolute, as in the authors' code; C₀ is normalised by token count). L2: ridge term of the
    solve, which keeps the update small where new keys are few."""

    nullspace_threshold: float = 1e-2  # SmolLM2-135M (SWEEP.md); the authors use 2e-2 on their models
    L2: float = 10.0  # the authors' value; on SmolLM2-135M better than 1 from 1,000 edits on (configs/smollm2-135m.yaml)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nullspace_threshold <= 0 or self.L2 < 0:
            raise ConfigError(f"need nullspace_threshold > 0 and L2 >= 0, got {self.nullspace_threshold}, {self.L2}")
