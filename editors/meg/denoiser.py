"""MeG's denoisers, built from a config by name: a residual MLP with adaLN conditioning (CPU default)
and the paper's 1-D patch DiT (for GPU runs sized like the paper's).

Both map (noisy code x_t [B, size], timestep t [B], query embedding y [B, cond_dim]) -> [B, size], the
x0 or v prediction the diffusion settings ask for. The condition is the L2-normalised query embedding,
unprojected, beside diffusers' sinusoidal timestep embedding; every block reads it through adaLN-zero
(shift, scale, gate), so an untrained network is the identity on its residual stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from kebench.errors import ConfigError

DENOISERS = ("mlp", "dit")


@dataclass(frozen=True)
class DenoiserConfig:
    kind: str  # mlp | dit
    size: int  # code length (the denoised vector)
    cond_dim: int  # query embedding width
    width: int = 512  # mlp: residual width; dit: hidden width
    depth: int = 4  # blocks
    patch: int = 32  # dit only: code entries per token
    heads: int = 4  # dit only
    time_dim: int = 128  # sinusoidal timestep channels

    def __post_init__(self) -> None:
        if self.kind not in DENOISERS:
            raise ConfigError(f"unknown MeG denoiser {self.kind!r}; use one of {', '.join(DENOISERS)}")
        if self.kind == "dit" and self.width % self.heads:
            raise ConfigError(f"the DiT's width {self.width} must be divisible by its {self.heads} heads")


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class _Condition(nn.Module):
    """[normalised y | TimestepEmbedding(sinusoid(t))]: the vector every adaLN reads."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.sinusoid = Timesteps(cfg.time_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.embed = TimestepEmbedding(cfg.time_dim, cfg.time_dim)
        self.dim = cfg.cond_dim + cfg.time_dim

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        temb = self.embed(self.sinusoid(t).to(y.dtype))
        return nn.functional.silu(torch.cat([nn.functional.normalize(y, dim=-1) * math.sqrt(y.shape[-1]), temb], -1))


class _MLPBlock(nn.Module):
    def __init__(self, width: int, cond: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
        self.ada = _zero(nn.Linear(cond, 3 * width))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return h + gate * self.mlp(_modulate(self.norm(h), shift, scale))


class MLPDenoiser(nn.Module):
    """Residual MLP over the code: far cheaper per parameter on a CPU than a patch transformer."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cond = _Condition(cfg)
        self.inp = nn.Linear(cfg.size, cfg.width)
        self.blocks = nn.ModuleList([_MLPBlock(cfg.width, self.cond.dim) for _ in range(cfg.depth)])
        self.final_norm = nn.LayerNorm(cfg.width, elementwise_affine=False, eps=1e-6)
        self.final_ada = _zero(nn.Linear(self.cond.dim, 2 * cfg.width))
        self.out = _zero(nn.Linear(cfg.width, cfg.size))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.cond(t, y)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.out(_modulate(self.final_norm(h), shift, scale))


class _DiTBlock(nn.Module):
    """Transformer block whose norms are modulated by the condition (adaLN-zero)."""

    def __init__(self, width: int, heads: int, cond: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.ada = _zero(nn.Linear(cond, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (m[:, None] for m in self.ada(c).chunk(6, dim=-1))
        h = _modulate(self.norm1(x), shift1, scale1)
        x = x + gate1 * self.attn(h, h, h, need_weights=False)[0]
        return x + gate2 * self.mlp(_modulate(self.norm2(x), shift2, scale2))


def _sincos(n: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sin-cos positions, sin and cos interleaved. Not diffusers' get_1d_sincos_pos_embed_from_grid
    (sin | cos concatenated, float64 frequencies: other bits); the buffer is not saved, so a saved DiT
    needs exactly these values."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(n, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


class DiTDenoiser(nn.Module):
    """The paper's 1-D patch DiT (MEG.md §6): the code cut into patches, fixed sin-cos positions, adaLN-zero blocks."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokens = math.ceil(cfg.size / cfg.patch)
        self.cond = _Condition(cfg)
        self.embed = nn.Linear(cfg.patch, cfg.width)
        self.register_buffer("pos", _sincos(self.tokens, cfg.width), persistent=False)
        self.blocks = nn.ModuleList([_DiTBlock(cfg.width, cfg.heads, self.cond.dim) for _ in range(cfg.depth)])
        self.final_norm = nn.LayerNorm(cfg.width, elementwise_affine=False, eps=1e-6)
        self.final_ada = _zero(nn.Linear(self.cond.dim, 2 * cfg.width))
        self.final = _zero(nn.Linear(cfg.width, cfg.patch))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, size = x.shape
        h = nn.functional.pad(x, (0, self.tokens * self.cfg.patch - size)).view(b, self.tokens, self.cfg.patch)
        h = self.embed(h) + self.pos
        c = self.cond(t, y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c)[:, None].chunk(2, dim=-1)
        return self.final(_modulate(self.final_norm(h), shift, scale)).reshape(b, -1)[:, :size]


def build_denoiser(cfg: DenoiserConfig) -> nn.Module:
    return MLPDenoiser(cfg) if cfg.kind == "mlp" else DiTDenoiser(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mlp_width(n_edits: int, size: int, cond_dim: int, depth: int, ratio: float, time_dim: int = 128) -> int:
    """The narrowest residual width (a multiple of 32) whose MLP denoiser has >= ratio × n_edits × size
    parameters: capacity that follows the table of numbers it must reproduce."""
    need = ratio * n_edits * size
    width = 64
    while True:
        cfg = DenoiserConfig("mlp", size, cond_dim, width=width, depth=depth, time_dim=time_dim)
        if _mlp_parameters(cfg) >= need:
            return width
        width += 32


def _mlp_parameters(cfg: DenoiserConfig) -> int:
    """MLPDenoiser's parameter count without building it (the sizing loop tries many widths)."""
    w, c, s = cfg.width, cfg.cond_dim + cfg.time_dim, cfg.size
    block = (w * 2 * w + 2 * w) + (2 * w * w + w) + (c * 3 * w + 3 * w)
    time = cfg.time_dim * cfg.time_dim * 2 + 2 * cfg.time_dim
    return time + (s * w + w) + cfg.depth * block + (c * 2 * w + 2 * w) + (w * s + s)
