"""MeG hyperparameters; per-model defaults live in editors/meg/configs/<model>.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from kebench.editor import HParams
from kebench.errors import ConfigError

from editors.meg.denoiser import DENOISERS
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
    # the suite whose training pool (kebench.suites.Suite.pool) MeG trains on. A run defaults to the pool of the
    # suite it edits (MeGEditor.default_hparams): CounterFact's for the CounterFact suites, MQuAKE and zsre-all,
    # zsRE's for zsre, zsre-knowedit and zsre-full; "counterfact" where no suite is given
    pool: str = "counterfact"

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
    familiarity: str = "auto"  # net: the paper's fake-class MLP, entropy < τ | similarity: 1 − max cosine to the edit queries < τ | auto: gate_for()
    familiarity_auto_threshold: int = 1000  # auto: the net below this many edits, the similarity gate from it
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

    # neuron code (MEG.md §10.4): the fitted neurons of the default model have a flat spectrum (64 of 192
    # principal components keep 73% of their standardised variance; rebuilt from 64 they make 84% of their
    # edits, from 96 98%), so the neurons are fitted inside a fixed subspace: the leading `code_size`
    # directions of `code_pilot` freely fitted neurons. Fitted there, 64 test edits converged 100% (median
    # 8 steps). 0 = fit freely and diffuse over the neurons' full standardised PCA.
    code_size: int = 64
    code_pilot: int = 256  # edits fitted freely to find the subspace (the run's first ones)
    code_lr: float = 0.3  # Adam on the code (whitened units)

    # generator (stage 4) -----------------------------------------------------------------
    generator: str = "diffusion"  # diffusion | knn (lookup upper bound) | oracle (subject routing, upper bound)
    augment_prefixes: tuple[str, ...] = DEFAULT_AUGMENT_PREFIXES
    train_on_failed: bool = True  # keep non-converged neurons as generator targets (reported either way)
    denoiser: str = "mlp"  # mlp: residual MLP with adaLN (CPU) | dit: the paper's patch DiT (GPU)
    denoiser_width: int = 0  # 0 = the narrowest with >= denoiser_ratio × edits × code size parameters (mlp)
    denoiser_depth: int = 4
    denoiser_ratio: float = 4.0  # parameters per number the generator must reproduce (edits × code size)
    denoiser_patch: int = 32  # dit only
    denoiser_heads: int = 4  # dit only
    diffusion_visits: int = 600  # training samples per edit (the schedule's length follows the edit count)
    diffusion_steps: int = 0  # set to override the visits budget
    diffusion_batch_size: int = 256
    diffusion_lr: float = 1e-3
    # x0 | v. At 1,000 CounterFact edits x0 wins: generated neurons at median relative error 0.107 vs 0.471,
    # 99.9% vs 95.3% efficacy without the gate, Score 80.9 vs 78.7 (paraphrase 87.5 vs 79.5)
    diffusion_prediction: str = "x0"
    diffusion_ema: float = 0.0
    diffusion_sample_steps: int = 10
    diffusion_select_every: int = 0  # 0 = five reconstruction checks over the schedule; the best is kept
    # paraphrase robustness: train on conditions moved by noise of norm up to this × the median relative distance
    # between a pool prompt's embedding and its paraphrase's (`paraphrase_distance_median` in the stats); 0 = off
    diffusion_cond_noise: float = 0.0

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

    def diffusion_schedule(self, n_edits: int) -> int:
        """Training steps: `diffusion_visits` samples per edit in batches of `diffusion_batch_size`."""
        return self.diffusion_steps or max(100, -(-self.diffusion_visits * n_edits // self.diffusion_batch_size))

    def gate_for(self, n_edits: int) -> str:
        """The familiarity gate for `n_edits` edits: `familiarity`, or with `auto` the one measured best at that
        scale (CounterFact, SmolLM2: the fake-class net at 100 edits, Score 74.5 vs 72.8; the similarity gate at
        1,000, 71.5 vs 62.9, and at 10,000)."""
        if self.familiarity != "auto":
            return self.familiarity
        return "net" if n_edits < self.familiarity_auto_threshold else "similarity"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown MeG activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        check_generator(self.generator)
        if self.fit_max_steps < 0 or self.fit_batch_size < 1:
            raise ConfigError("fit_max_steps must be >= 0 and fit_batch_size >= 1")
        if self.familiarity not in ("net", "similarity", "auto"):
            raise ConfigError(f"unknown familiarity gate {self.familiarity!r}; use net, similarity or auto")
        if self.denoiser not in DENOISERS:
            raise ConfigError(f"unknown MeG denoiser {self.denoiser!r}; use one of {', '.join(DENOISERS)}")
        if self.diffusion_prediction not in ("x0", "v"):
            raise ConfigError(f"diffusion_prediction must be x0 or v, got {self.diffusion_prediction!r}")
        if self.code_size < 0 or self.code_pilot < 2:
            raise ConfigError("code_size must be >= 0 (0 = no code) and code_pilot >= 2")
        if self.diffusion_cond_noise < 0:
            raise ConfigError(f"diffusion_cond_noise must be >= 0, got {self.diffusion_cond_noise}")
        if not 0 <= self.familiarity_alpha < 1:
            raise ConfigError(f"familiarity_alpha must be in [0, 1), got {self.familiarity_alpha}")
