"""MeG's generator (stage 4): conditional diffusion over neuron codes.

The denoiser (editors/meg/denoiser.py: a residual MLP by default, the paper's patch DiT for GPU runs)
learns the code of each edit's neuron (editors/meg/code.py) given the query embedding. Training uses
diffusers' DDPMScheduler (x0- or v-prediction), its cosine schedule with warm-up and its EMA; sampling
is DDIM (η = 0) from one fixed noise draw, so the generated neuron is a function of the query alone.

Changes from the official code (MEG.md §6, §10.4): diffusion over a whitened code instead of the raw
vector ÷ 0.01; capacity and training length follow the edit count (parameters per number to store,
visits per edit) instead of a fixed network and epoch count; the checkpoint with the lowest
reconstruction error on the training conditions is kept, as the authors keep theirs.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from kebench.editor import check_finite
from kebench.errors import ConfigError
from kebench.io import atomic_torch_save
from kebench.progress import progress_bar

from editors.meg.code import NeuronCode, relative_error
from editors.meg.denoiser import DenoiserConfig, build_denoiser

log = logging.getLogger(__name__)

PREDICTIONS = {"x0": "sample", "v": "v_prediction"}


@dataclass(frozen=True)
class DiffusionSettings:
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 100
    ema: float = 0.0  # EMA decay; 0 = off
    prediction: str = "x0"  # x0 | v
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    sample_steps: int = 10
    seed: int = 0
    # Condition augmentation: each training condition moved by isotropic noise of norm U(0, cond_noise)·‖y‖,
    # so that a neighbourhood of each edit's query embedding (where its paraphrases land) maps to its neuron.
    cond_noise: float = 0.0
    select_every: int = 0  # steps between reconstruction checks for checkpoint selection; 0 = at the end only
    select_edits: int = 512  # training conditions the check samples

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ConfigError(f"unknown diffusion prediction {self.prediction!r}; use x0 or v")


def _perturb(y: torch.Tensor, radius: float, gen: torch.Generator) -> torch.Tensor:
    """`y` plus a random direction of norm U(0, radius)·‖y‖ per row."""
    direction = nn.functional.normalize(torch.randn(y.shape, generator=gen), dim=-1).to(y.device)
    norm = torch.rand(len(y), 1, generator=gen).to(y.device) * radius * y.norm(dim=-1, keepdim=True)
    return y + direction * norm


def first_conditions(cond_edit: torch.Tensor) -> torch.Tensor:
    """Index of each edit's first condition (its bare query, where the augmented ones follow), by edit; edits
    without a condition are left out."""
    first = torch.full((int(cond_edit.max()) + 1,), -1, dtype=torch.long)
    first.scatter_reduce_(0, cond_edit.long(), torch.arange(len(cond_edit)), reduce="amin", include_self=False)
    return first[first >= 0]


def _schedulers(settings: DiffusionSettings) -> tuple[object, object]:
    from diffusers import DDIMScheduler, DDPMScheduler

    train = DDPMScheduler(
        num_train_timesteps=settings.train_timesteps,
        beta_schedule=settings.beta_schedule,
        prediction_type=PREDICTIONS[settings.prediction],
        clip_sample=False,
    )
    sample = DDIMScheduler.from_config(train.config, timestep_spacing="trailing", set_alpha_to_one=False)
    return train, sample


class DiffusionGenerator:
    """Train on (neuron, query embedding) pairs; sample a neuron for new query embeddings."""

    def __init__(self, cfg: DenoiserConfig, settings: DiffusionSettings, code: NeuronCode | None = None) -> None:
        if code is not None and code.size != cfg.size:
            raise ConfigError(f"the denoiser's size {cfg.size} differs from the neuron code's {code.size}")
        self.cfg, self.settings, self.code = cfg, settings, code
        with torch.random.fork_rng(devices=[]):  # the initial weights follow the seed, not what ran before
            torch.manual_seed(settings.seed)
            self.model = build_denoiser(cfg)
        self.train_scheduler, self.sample_scheduler = _schedulers(settings)

    def to(self, device: torch.device | str) -> DiffusionGenerator:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fit(
        self,
        vectors: torch.Tensor,
        conds: torch.Tensor,
        cond_edit: torch.Tensor,
        checkpoint: Path | None = None,
        checkpoint_every: int = 500,
        focus: torch.Tensor | None = None,
        focus_share: float = 0.5,
        label: str = "MeG: training the generator",
    ) -> dict[str, float]:
        """Train the denoiser: condition `conds[i]` belongs to the edit whose fitted neuron is `vectors[cond_edit[i]]`.

        The training state (weights, optimiser, schedule, EMA, RNG, best checkpoint) is written to
        `checkpoint` every `checkpoint_every` steps and resumed from it, so an interrupted hour-long
        training continues where it stopped, to the same result. Training starts from the current weights (a
        growing sequence continues its previous step's denoiser). With `focus` (a mask over the conditions),
        `focus_share` of each batch is drawn from the focused conditions and the rest from all of them."""
        from diffusers.optimization import get_cosine_schedule_with_warmup
        from diffusers.training_utils import EMAModel

        if self.code is None:
            raise ConfigError("the diffusion generator needs a neuron code before training")
        if len(conds) != len(cond_edit) or len(conds) == 0:
            raise ConfigError(f"diffusion needs matching, non-empty conditions ({len(conds)} vs {len(cond_edit)})")
        s = self.settings
        torch.manual_seed(s.seed)
        gen = torch.Generator().manual_seed(s.seed)
        dev = self.device
        codes = self.code.encode(vectors).to(dev)
        y_all = conds.float().to(dev)
        edit_all = cond_edit.long().to(dev)
        opt = torch.optim.AdamW(self.model.parameters(), lr=s.lr, weight_decay=0.0)
        sched = get_cosine_schedule_with_warmup(opt, min(s.warmup, s.steps // 10), s.steps)
        ema = EMAModel(self.model.parameters(), decay=s.ema) if s.ema > 0 else None
        probe = self._probe(cond_edit, gen)
        best: dict = {"error": float("inf"), "step": -1, "state": None}
        losses: list[float] = []
        fingerprint = json.dumps({"config": self.config(), "pairs": len(y_all)}, sort_keys=True)
        start = self._resume(checkpoint, fingerprint, opt, sched, ema, gen, losses, best) if checkpoint else 0
        every = s.select_every or s.steps
        focused = None if focus is None or bool(focus.all()) or not bool(focus.any()) else torch.nonzero(focus).squeeze(1)
        self.model.train()
        with progress_bar(label, s.steps) as bar:
            bar.advance(start)
            for step in range(start, s.steps):
                if checkpoint is not None and step > start and step % checkpoint_every == 0:
                    atomic_torch_save(checkpoint, {
                        "fingerprint": fingerprint, "step": step, "losses": list(losses), "best": best,
                        "model": self.model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "ema": ema.state_dict() if ema is not None else {}, "rng": gen.get_state(),
                    })
                idx = self._batch(len(y_all), focused, focus_share, gen).to(dev)
                x0, y = codes[edit_all[idx]], y_all[idx]
                if s.cond_noise > 0:
                    y = _perturb(y, s.cond_noise, gen)
                noise = torch.randn(x0.shape, generator=gen).to(dev)
                t = torch.randint(0, s.train_timesteps, (len(idx),), generator=gen).to(dev)
                xt = self.train_scheduler.add_noise(x0, noise, t)
                target = x0 if s.prediction == "x0" else self.train_scheduler.get_velocity(x0, noise, t)
                loss = nn.functional.mse_loss(self.model(xt, t, y), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                opt.step()
                sched.step()
                if ema is not None:
                    ema.step(self.model.parameters())
                losses.append(loss.item())
                bar.advance()
                if (step + 1) % every == 0 or step + 1 == s.steps:
                    self._select(step + 1, ema, conds[probe], vectors[cond_edit[probe]], best)
        self.model.load_state_dict(best["state"])
        self.model.eval()
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        tail = losses[-max(1, len(losses) // 10) :]
        check_finite("diffusion loss", torch.tensor(tail))
        return {
            "diffusion_loss_first": losses[0],
            "diffusion_loss_last": sum(tail) / len(tail),
            "diffusion_train_pairs": float(len(y_all)),
            "diffusion_steps": s.steps,
            "diffusion_selected_step": best["step"],
            "diffusion_selection_error": best["error"],
        }

    def _batch(self, n: int, focused: torch.Tensor | None, share: float, gen: torch.Generator) -> torch.Tensor:
        """Indices of one training batch: uniform over the `n` conditions, or `share` of it from `focused`."""
        size = min(self.settings.batch_size, n)
        if focused is None:
            return torch.randint(0, n, (size,), generator=gen)
        k = max(1, round(size * share))
        pick = focused[torch.randint(0, len(focused), (k,), generator=gen)]
        return torch.cat([pick, torch.randint(0, n, (size - k,), generator=gen)])

    def _probe(self, cond_edit: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Indices of the training conditions the reconstruction check samples: each edit's first
        condition (its bare query), up to `select_edits` edits drawn once."""
        first = first_conditions(cond_edit)
        pick = torch.randperm(len(first), generator=gen)[: self.settings.select_edits]
        return first[pick.sort().values]

    @torch.no_grad()
    def _select(self, step: int, ema: object, conds: torch.Tensor, fitted: torch.Tensor, best: dict) -> None:
        """Keep the weights (the EMA ones where kept) whose samples for `conds` have the lowest median
        relative error against the `fitted` neurons."""
        state = copy.deepcopy(self.model.state_dict())
        if ema is not None:
            ema.copy_to(self.model.parameters())  # type: ignore[attr-defined]
        error = float(relative_error(self.sample(conds), fitted).median())
        if error < best["error"]:
            best.update(error=error, step=step, state=copy.deepcopy(self.model.state_dict()))
        self.model.load_state_dict(state)

    def _resume(self, path: Path, fingerprint: str, opt: torch.optim.Optimizer, sched: object, ema: object,
                gen: torch.Generator, losses: list[float], best: dict) -> int:
        """Restore a partial training from `path` if it is this training's; the step to continue from."""
        if not path.is_file():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state["fingerprint"] != fingerprint:
                log.warning("ignoring %s: a partial training with other settings or data", path)
                return 0
        except Exception as exc:  # truncated or foreign file: train from the start
            log.warning("ignoring partial diffusion training %s (%s); starting over", path, type(exc).__name__)
            return 0
        self.model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])  # type: ignore[attr-defined]
        if ema is not None:
            ema.load_state_dict(state["ema"])  # type: ignore[attr-defined]
        gen.set_state(state["rng"])
        losses.extend(state["losses"])
        best.update(state["best"])
        log.info("resuming diffusion training at step %d of %d from %s", state["step"], self.settings.steps, path)
        return int(state["step"])

    @torch.no_grad()
    def sample(self, conds: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """DDIM (η = 0) from one fixed noise draw: a deterministic neuron per condition, in neuron units."""
        if self.code is None:
            raise ConfigError("the diffusion generator is not trained; call fit() or load a saved one")
        if len(conds) == 0:
            return torch.zeros(0, self.code.mean.shape[0])
        was_training = self.model.training
        self.model.eval()
        dev = self.device
        sched = copy.deepcopy(self.sample_scheduler)
        sched.set_timesteps(steps or self.settings.sample_steps)
        noise = torch.randn(1, self.cfg.size, generator=torch.Generator().manual_seed(self.settings.seed + 1))
        x = noise.expand(len(conds), -1).clone().to(dev)
        y = conds.float().to(dev)
        for t in sched.timesteps:
            out = self.model(x, t.expand(len(conds)).to(dev), y)
            x = sched.step(out, t, x, eta=0.0).prev_sample
        self.model.train(was_training)
        return check_finite("generated neurons", self.code.decode(x).float().cpu())

    # persistence -----------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.code is not None:
            state.update({f"code.{k}": v for k, v in self.code.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def config(self) -> dict[str, object]:
        return {"denoiser": asdict(self.cfg), "settings": asdict(self.settings)}

    @classmethod
    def from_state(cls, config: dict[str, dict], state: dict[str, torch.Tensor]) -> DiffusionGenerator:
        pick = lambda prefix: {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
        gen = cls(DenoiserConfig(**config["denoiser"]), DiffusionSettings(**config["settings"]),
                  NeuronCode.from_state(pick("code.")))
        gen.model.load_state_dict(pick("model."))
        gen.model.eval()
        return gen
