"""Hyperparameters shared by the locate-then-edit methods (MEMIT, AlphaEdit), and MEMIT's own.

Names follow the MEMIT/AlphaEdit hparams files. Defaults are those chosen for the default
model (SmolLM2-135M, see SWEEP.md); per-model values live in configs/<model>.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

from kebench.editor import HParams
from kebench.errors import ConfigError


@dataclass(frozen=True)
class LocateEditHParams(HParams):
    """Where to edit, how to fit target values, and which statistics to use."""

    layers: tuple[int, ...] = (4, 5, 6, 7, 8)  # MLP output projections to edit; the last one carries δ
    # target-value fitting (see editors/memit/values.py)
    v_lr: float = 1.0
    v_num_grad_steps: int = 25
    v_weight_decay: float = 0.5
    kl_factor: float = 0.0625
    clamp_norm_factor: float = 0.75
    v_stop_nll: float = 0.05  # an edit stops fitting once its per-token target NLL is below this
    v_edits_per_batch: int = 32  # edits fitted together in one forward/backward
    v_cache: bool = True  # reuse fitted groups from $KEBENCH_CACHE/fits (exact-key match; kebench.fit_cache)
    update_checkpoint: bool = True  # store each layer's ΔW as it is written, so a killed update resumes (editors/memit/checkpoint.py)
    # context prefixes averaged over (model-written, seeded); the bare prompt is always included
    n_context_prefixes: int = 5
    # least squares over every prefixed version of a key (True) or over MEMIT's averaged key (False)
    per_prefix_keys: bool = False
    context_prefix_tokens: int = 10
    seed: int = 0
    # key statistics C₀ (kebench.stats.layer_covariance)
    stats_n_tokens: int = 100_000
    stats_seq_len: int = 256
    stats_corpus: str | None = None  # a text file, one paragraph per line; None: shipped WikiText
    rows_per_pass: int = 64  # prompt rows per no-grad forward when reading keys

    def __post_init__(self) -> None:
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise ConfigError(f"layers must be a non-empty ascending list without repeats, got {list(self.layers)}")
        if self.v_num_grad_steps < 1 or self.v_edits_per_batch < 1 or self.n_context_prefixes < 0:
            raise ConfigError("v_num_grad_steps and v_edits_per_batch must be >= 1 and n_context_prefixes >= 0")


@dataclass(frozen=True)
class MemitHParams(LocateEditHParams):
    """MEMIT: λ (mom2_update_weight) weighs C₀ against the new keys; scale it with d_ff."""

    mom2_update_weight: float = 1607.0  # 15000 (Llama-3-8B, d_ff 14336) scaled to d_ff 1536; see SWEEP.md

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mom2_update_weight < 0:
            raise ConfigError(f"mom2_update_weight must be >= 0, got {self.mom2_update_weight}")
