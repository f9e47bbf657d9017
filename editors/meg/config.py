"""MeG hyperparameters; per-model defaults live in editors/meg/configs/<model>.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field

from kebench.editor import HParams
from kebench.errors import ConfigError

from editors.meg.denoiser import DENOISERS, DenoiserConfig, mlp_width
from editors.meg.diffusion import DiffusionSettings
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
class FittingSettings:
    """Stage 3: one dynamic neuron fitted per edit (MeG's "neuron" stage; docs/MEG.md §3)."""

    lr: float = 0.1  # Adam
    max_steps: int = 100
    nll_threshold: float = 0.1  # converged: argmax = target everywhere and mean NLL below this
    batch_size: int = 64  # edits fitted together in one forward/backward
    seed: int = 42  # the shared init of every neuron (official: set_seed(42))
    cache: bool = True  # reuse fitted neuron chunks and trained generators from $KEBENCH_CACHE/fits (exact keys; kebench.fit_cache)
    # extra fitting rows, prefix + prompt: fixed generic contexts (never evaluation paraphrases).
    # On 32 CounterFact edits they raised paraphrase efficacy of the fitted neuron 0.22 -> 0.41 (layer 13)
    # at 4x the fitting rows; () turns them off.
    context_prefixes: tuple[str, ...] = DEFAULT_CONTEXT_PREFIXES
    # neuron code (docs/MEG.md §10.4): the fitted neurons of the default model have a flat spectrum (64 of 192
    # principal components keep 73% of their standardised variance; rebuilt from 64 they make 84% of their
    # edits, from 96 98%), so the neurons are fitted inside a fixed subspace: the leading `code_size`
    # directions of `code_pilot` freely fitted neurons. Fitted there, 64 test edits converged 100% (median
    # 8 steps). 0 = fit freely and diffuse over the neurons' full standardised PCA.
    code_size: int = 64
    code_pilot: int = 256  # edits fitted freely to find the subspace (the run's first ones)
    code_lr: float = 0.3  # Adam on the code (whitened units)

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.batch_size < 1:
            raise ConfigError("fitting.max_steps must be >= 0 and fitting.batch_size >= 1")
        if self.code_size < 0 or self.code_pilot < 2:
            raise ConfigError("fitting.code_size must be >= 0 (0 = no code) and fitting.code_pilot >= 2")


@dataclass(frozen=True)
class EncoderSettings:
    """Stage 1: the query encoder, tuned contrastively on (prompt, paraphrase) pairs of the training pool."""

    model: str = "default"  # folder or hub id; default = embedded all-MiniLM-L6-v2
    pooling: str = "auto"  # mean | cls | auto (sentence-transformers config, else cls)
    pairs: int = 2000  # (prompt, paraphrase) pairs from the pool
    steps: int = 100  # 0 = use the pretrained encoder as is
    batch_size: int = 128
    lr: float = 1e-4
    temperature: float = 0.05
    cache: bool = True


@dataclass(frozen=True)
class GateSettings:
    """Stage 2: the familiarity gate deciding whether the neuron fires for a query."""

    enabled: bool = True  # False: always fire (ablation)
    kind: str = "auto"  # net: the paper's fake-class MLP, entropy < τ | similarity: 1 − max cosine to the edit queries < τ | auto: MeGHParams.gate_for()
    auto_threshold: int = 1000  # auto: the net below this many edits, the similarity gate from it
    classes: int = 10
    hidden: int = 1024
    blocks: int = 2
    steps: int = 400
    lr: float = 1e-3
    negatives: int = 1000  # unrelated queries for training (as many again held out for τ)
    negative_weight: float = 1.0
    noise: float = 0.0
    alpha: float = 0.05  # τ: largest with held-out false-fire rate ≤ α
    tau: float | None = None  # set to override the calibrated τ

    def __post_init__(self) -> None:
        if self.kind not in ("net", "similarity", "auto"):
            raise ConfigError(f"unknown familiarity gate {self.kind!r}; use gate.kind=net, similarity or auto")
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"gate.alpha must be in [0, 1), got {self.alpha}")


@dataclass(frozen=True)
class GeneratorSettings:
    """Stage 4: the conditional diffusion model generating a neuron (code) from the query."""

    kind: str = "diffusion"  # diffusion | knn (lookup upper bound) | oracle (subject routing, upper bound)
    augment_prefixes: tuple[str, ...] = DEFAULT_AUGMENT_PREFIXES
    train_on_failed: bool = True  # keep non-converged neurons as generator targets (reported either way)
    denoiser: str = "mlp"  # mlp: residual MLP with adaLN (CPU) | dit: the paper's patch DiT (GPU)
    width: int = 0  # 0 = the narrowest with >= ratio × edits × code size parameters (mlp)
    depth: int = 4
    ratio: float = 4.0  # parameters per number the generator must reproduce (edits × code size)
    # a mixture of denoisers, one per this many edits (k-means clusters of the edit queries, editors/meg/experts.py),
    # each sized by `ratio` for its own edits; 0 = one denoiser for all edits. Median relative error of generated vs
    # fitted neurons, 600 visits per edit, one CPU thread (results/benchmarks/meg_generator_sweep_n*.json): 10,000
    # CounterFact edits, one width-256 denoiser 0.39 (selection check, 37 min) vs 10 experts 0.065 (15 min);
    # 1,000 edits, one denoiser 0.064 vs 4 experts of 250 0.036.
    edits_per_expert: int = 1000
    patch: int = 32  # dit only
    heads: int = 4  # dit only
    visits: int = 600  # training samples per edit (the schedule's length follows the edit count)
    steps: int = 0  # set to override the visits budget
    batch_size: int = 256
    # AdamW peak lr (cosine schedule). At 1,000 CounterFact edits, 600 visits, median relative error of generated vs
    # fitted neurons: width 64, lr 1e-3 0.103, 3e-3 0.066, 5e-3 0.064, 7e-3 0.059, 1e-2 0.059; width 128, 1e-3 0.051,
    # 5e-3 0.030; width 256, 1e-3 0.032, 3e-3 0.022 (results/benchmarks/meg_generator_sweep_n1000.json):
    # 1e-3 left the denoiser undertrained at every width.
    lr: float = 5e-3
    # x0 | v. At 1,000 CounterFact edits x0 wins: generated neurons at median relative error 0.107 vs 0.471,
    # 99.9% vs 95.3% efficacy without the gate, Score 80.9 vs 78.7 (paraphrase 87.5 vs 79.5)
    prediction: str = "x0"
    ema: float = 0.0
    sample_steps: int = 10
    select_every: int = 0  # 0 = five reconstruction checks over the schedule; the best is kept
    # paraphrase robustness: train on conditions moved by noise of norm up to this × the median relative distance
    # between a pool prompt's embedding and its paraphrase's (`paraphrase_distance_median` in the stats); 0 = off
    cond_noise: float = 0.0

    def __post_init__(self) -> None:
        check_generator(self.kind)
        if self.denoiser not in DENOISERS:
            raise ConfigError(f"unknown MeG denoiser {self.denoiser!r}; use one of {', '.join(DENOISERS)}")
        if self.prediction not in ("x0", "v"):
            raise ConfigError(f"generator.prediction must be x0 or v, got {self.prediction!r}")
        if self.cond_noise < 0:
            raise ConfigError(f"generator.cond_noise must be >= 0, got {self.cond_noise}")
        if self.edits_per_expert < 0:
            raise ConfigError(f"generator.edits_per_expert must be >= 0 (0: one denoiser), got {self.edits_per_expert}")


# The flat names of the settings before they were grouped (results files and job lines of that time), exactly
# those: "<prefix>_<name>" -> "<section>.<name>" for the names listed, and whole names that moved. Names of earlier
# schemas (the old DiT's `diffusion_depth`, `diffusion_hidden`, ...) are not today's settings and stay as they are.
_FORMER_PREFIXES = (("fit_", "fitting."), ("encoder_", "encoder."), ("familiarity_", "gate."),
                    ("denoiser_", "generator."), ("diffusion_", "generator."))
_FORMER_FLAT = frozenset("""
    fit_lr fit_max_steps fit_nll_threshold fit_batch_size fit_seed fit_cache encoder_pooling encoder_pairs encoder_steps
    encoder_batch_size encoder_lr encoder_temperature encoder_cache familiarity_auto_threshold familiarity_classes
    familiarity_hidden familiarity_blocks familiarity_steps familiarity_lr familiarity_negatives
    familiarity_negative_weight familiarity_noise familiarity_alpha familiarity_tau denoiser_depth denoiser_ratio
    denoiser_patch denoiser_heads diffusion_visits diffusion_batch_size diffusion_lr diffusion_prediction diffusion_ema
    diffusion_sample_steps diffusion_select_every diffusion_cond_noise""".split())
_FORMER_NAMES = {
    "context_prefixes": "fitting.context_prefixes", "code_size": "fitting.code_size",
    "code_pilot": "fitting.code_pilot", "code_lr": "fitting.code_lr", "encoder": "encoder.model",
    "use_familiarity": "gate.enabled", "familiarity": "gate.kind", "generator": "generator.kind",
    "augment_prefixes": "generator.augment_prefixes", "train_on_failed": "generator.train_on_failed",
    "denoiser": "generator.denoiser", "denoiser_width": "generator.width", "diffusion_steps": "generator.steps",
}


@dataclass(frozen=True)
class MeGHParams(HParams):
    """Settings of every MeG stage (docs/MEG.md §3-§7) in sections, with the ablation switches."""

    layer: int = -1  # MLP the neuron is hooked on; -1 = int(0.44 · n_layers), Llama-3's 14/32 (docs/MEG.md §11)
    activation: str = "linear"  # linear v·(kᵀh) | silu/gelu/gelu_new/relu v·act(kᵀh+b)
    # the suite whose training pool (kebench.suites.Suite.pool) MeG trains on (encoder pairs, familiarity
    # negatives; disjoint from the edits). A run defaults to the pool of the suite it edits
    # (MeGEditor.default_hparams): CounterFact's for the CounterFact suites, MQuAKE and zsre-all, zsRE's for
    # zsre, zsre-knowedit and zsre-full; "counterfact" where no suite is given
    pool: str = "counterfact"
    fitting: FittingSettings = field(default_factory=FittingSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    seed: int = 0
    small_net_threads: int = 1  # CPU threads for the small nets (intra-op threading only slows them)
    encode_batch_size: int = 128
    self_check: bool = True  # score the generated neurons on the requests after training

    @classmethod
    def renamed(cls, key: str) -> str | None:
        """The current name of a setting's former flat name (`familiarity_alpha` -> `gate.alpha`), else None."""
        if key in _FORMER_NAMES:
            return _FORMER_NAMES[key]
        if key in _FORMER_FLAT:
            prefix, section = next((p, s) for p, s in _FORMER_PREFIXES if key.startswith(p))
            return section + key[len(prefix):]
        return None

    def layer_for(self, num_layers: int) -> int:
        """The neuron's layer for a model with `num_layers` blocks (resolving -1 = auto)."""
        layer = int(0.44 * num_layers) if self.layer == -1 else self.layer
        if not 0 <= layer < num_layers:
            raise ConfigError(f"MeG layer {layer} is outside the model's layers 0..{num_layers - 1}; set --hparam layer=N")
        return layer

    def diffusion_schedule(self, n_edits: int) -> int:
        """Training steps: `generator.visits` samples per edit in batches of `generator.batch_size`."""
        g = self.generator
        return g.steps or max(100, -(-g.visits * n_edits // g.batch_size))

    def denoiser_config(self, n_edits: int, code_size: int, cond_dim: int) -> DenoiserConfig:
        """The denoiser for `n_edits` edits over a `code_size` code: `generator.width`, or (mlp) the narrowest width with
        `generator.ratio` parameters per number it must reproduce; the DiT's width is fixed."""
        g = self.generator
        width = g.width or (mlp_width(n_edits, code_size, cond_dim, g.depth, g.ratio) if g.denoiser == "mlp" else 768)
        return DenoiserConfig(g.denoiser, code_size, cond_dim, width=width, depth=g.depth, patch=g.patch, heads=g.heads)

    def diffusion_settings(self, n_edits: int, cond_noise: float = 0.0) -> DiffusionSettings:
        """The diffusion training of `n_edits` edits (`diffusion_schedule` steps, five selection checks by default)."""
        g = self.generator
        steps = self.diffusion_schedule(n_edits)
        return DiffusionSettings(
            steps=steps, batch_size=g.batch_size, lr=g.lr, ema=g.ema, prediction=g.prediction,
            sample_steps=g.sample_steps, seed=self.seed, cond_noise=cond_noise,
            select_every=g.select_every or max(1, steps // 5),
        )

    def gate_for(self, n_edits: int) -> str:
        """The familiarity gate for `n_edits` edits: `gate.kind`, or with `auto` the one measured best at that
        scale (CounterFact, SmolLM2: the fake-class net at 100 edits, Score 74.5 vs 72.8; the similarity gate at
        1,000, 71.5 vs 62.9, and at 10,000)."""
        if self.gate.kind != "auto":
            return self.gate.kind
        return "net" if n_edits < self.gate.auto_threshold else "similarity"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown MeG activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
