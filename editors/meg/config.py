"""MeG hyperparameters; per-model defaults live in editors/meg/configs/<model>.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from kebench.editor import HParams
from kebench.errors import ConfigError

from editors.meg.generators import check_generator
from editors.meg.neuron import ACTIVATIONS

# Generic context prefixes used to augment *conditions* (familiarity positives, generator
# conditions): fixed templates, never evaluation paraphrases.
DEFAULT_AUGMENT_PREFIXES: tuple[str, ...] = (
    "Here is a fact. ",
    "Tell me: ",
    "I remember that ",
    "According to the encyclopedia, ",
)


DEFAULT_CONTEXT_PREFIXES: tuple[str, ...] = (
    "Today is a sunny day. ",
    "The following is from a news article. ",
    "In other words, ",
)


@dataclass(frozen=True)
class MeGHParams(HParams):
    """Settings of every MeG stage (MEG.md §3-§7), with the ablation switches."""

    # dynamic neuron (stage 3) ------------------------------------------------------------
    layer: int = -1  # MLP the neuron is hooked on; -1 = int(0.44 · n_layers), Llama-3's 14/32 (MEG.md §11)
    activation: str = "linear"  # linear v·(kᵀh) | silu/gelu/gelu_new/relu v·act(kᵀh+b)
    fit_lr: float = 0.1  # Adam
    fit_max_steps: int = 100
    fit_nll_threshold: float = 0.1  # converged: argmax = target everywhere and mean NLL below this
    fit_batch_size: int = 64  # edits fitted together in one forward/backward
    fit_seed: int = 42  # the shared init of every neuron (official: set_seed(42))
    fit_cache: bool = True  # reuse fitted neuron chunks and trained generators from $KEBENCH_CACHE/fits (exact keys; kebench.fit_cache)
    # extra fitting rows, prefix + prompt: fixed generic contexts (never evaluation paraphrases).
    # On 32 CounterFact edits they raised paraphrase efficacy of the fitted neuron 0.22 -> 0.41 (layer 13)
    # at 4x the fitting rows; () turns them off.
    context_prefixes: tuple[str, ...] = DEFAULT_CONTEXT_PREFIXES

    # disjoint training pool (encoder pairs, familiarity negatives) -----------------------
    pool: str = "counterfact"  # suite whose training pool to use (kebench.data.training_pool)

    # query encoder (stage 1) --------------------------------------------------------------
    encoder: str = "default"  # folder or hub id; default = embedded all-MiniLM-L6-v2
    encoder_pooling: str = "auto"  # mean | cls | auto (sentence-transformers config, else cls)
    encoder_pairs: int = 2000  # (prompt, paraphrase) pairs from the pool
    encoder_steps: int = 100  # 0 = use the pretrained encoder as is
    encoder_batch_size: int = 128
    encoder_lr: float = 1e-4
    encoder_temperature: float = 0.05
    encoder_cache: bool = True

    # familiarity gate (stage 2) -----------------------------------------------------------
    use_familiarity: bool = True  # False: always fire (ablation)
    familiarity: str = "net"  # net: the paper's fake-class MLP, entropy < τ | similarity: 1 − max cosine to the edit queries < τ
    familiarity_classes: int = 10
    familiarity_hidden: int = 1024
    familiarity_blocks: int = 2
    familiarity_steps: int = 400
    familiarity_lr: float = 1e-3
    familiarity_negatives: int = 1000  # unrelated queries for training (as many again held out for τ)
    familiarity_negative_weight: float = 1.0
    familiarity_noise: float = 0.0
    familiarity_alpha: float = 0.05  # τ: largest with held-out false-fire rate ≤ α
    familiarity_tau: float | None = None  # set to override the calibrated τ

    # generator (stage 4) -----------------------------------------------------------------
    generator: str = "diffusion"  # diffusion | knn (lookup baseline) | oracle (subject routing, upper bound)
    augment_prefixes: tuple[str, ...] = DEFAULT_AUGMENT_PREFIXES
    train_on_failed: bool = True  # keep non-converged neurons as generator targets (reported either way)
    diffusion_steps: int = 0  # 0 = auto: `diffusion_epochs` passes over the (vector, condition) pairs, within [1500, 20000]
    diffusion_epochs: int = 300
    diffusion_batch_size: int = 0  # 0 = auto: 64 up to 512 pairs, else 128
    diffusion_lr: float = 3e-3
    diffusion_patch: int = 32
    diffusion_hidden: int = 0  # 0 = auto from edit count
    diffusion_depth: int = 0  # 0 = auto
    diffusion_ema: float = 0.0
    diffusion_sample_steps: int = 25
    diffusion_cond_noise: float = 0.0  # train on conditions moved by noise of norm up to this × ‖y‖ (paraphrase robustness)

    # misc ---------------------------------------------------------------------------------
    seed: int = 0
    small_net_threads: int = 1  # CPU threads for the small nets (intra-op threading only slows them)
    encode_batch_size: int = 128
    self_check: bool = True  # score the generated neurons on the requests after training

    def layer_for(self, num_layers: int) -> int:
        """The neuron's layer for a model with `num_layers` blocks (resolving -1 = auto)."""
        layer = int(0.44 * num_layers) if self.layer == -1 else self.layer
        if not 0 <= layer < num_layers:
            raise ConfigError(f"MeG layer {layer} is outside the model's layers 0..{num_layers - 1}; set --hparam layer=N")
        return layer

    def diffusion_schedule(self, pairs: int) -> tuple[int, int]:
        """(steps, batch size) for `pairs` training pairs, resolving the 0 = auto settings."""
        batch = self.diffusion_batch_size or (64 if pairs <= 512 else 128)
        steps = self.diffusion_steps or min(20000, max(1500, self._epoch_steps(pairs, batch)))
        return steps, batch

    def diffusion_capped(self, pairs: int) -> int | None:
        """The steps of the full `diffusion_epochs` schedule when the auto schedule's 20,000-step cap
        cuts it, else None. At 10,000 CounterFact edits (49,980 pairs) the cap leaves 51 of 150 passes
        and the generated neurons fall from 89% to 11% efficacy."""
        steps, batch = self.diffusion_schedule(pairs)
        full = self._epoch_steps(pairs, batch)
        return full if not self.diffusion_steps and steps < full else None

    def _epoch_steps(self, pairs: int, batch: int) -> int:
        """Steps for `diffusion_epochs` passes over `pairs` in batches of `batch`."""
        return self.diffusion_epochs * pairs // batch

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown MeG activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        check_generator(self.generator)
        if self.fit_max_steps < 0 or self.fit_batch_size < 1:
            raise ConfigError("fit_max_steps must be >= 0 and fit_batch_size >= 1")
        if self.familiarity not in ("net", "similarity"):
            raise ConfigError(f"unknown familiarity gate {self.familiarity!r}; use net or similarity")
        if self.diffusion_cond_noise < 0:
            raise ConfigError(f"diffusion_cond_noise must be >= 0, got {self.diffusion_cond_noise}")
        if not 0 <= self.familiarity_alpha < 1:
            raise ConfigError(f"familiarity_alpha must be in [0, 1), got {self.familiarity_alpha}")
