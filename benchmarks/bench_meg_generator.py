"""MeG generator training cost on this machine: a 128×3 patch DiT over raw neurons (the old CPU size, built as
`denoiser=dit` is today) vs the residual-MLP
denoiser over the 64-entry neuron code, side by side in one process (interleaved, best of several rounds).

Training time does not depend on the values trained on, so the step costs are measured on random pairs of the
real shapes (1,152-float neurons, 384-float MiniLM embeddings) and multiplied by each design's schedule:
the old one 150 passes over 5 conditions per edit in batches of 128, the new one `diffusion_visits` samples per
edit in batches of `diffusion_batch_size` (editors/meg/config.py).

    python benchmarks/bench_meg_generator.py results/benchmarks/meg_generator.json --edits 1000 10000 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from editors.meg.config import MeGHParams
from editors.meg.denoiser import DenoiserConfig, build_denoiser, count_parameters, mlp_width
from kebench.io import atomic_write_json

NEURON, COND, CONDITIONS_PER_EDIT = 1152, 384, 5
OLD = {"patch": 64, "width": 128, "depth": 3, "heads": 2, "batch": 128, "epochs": 150}


def step_seconds(model: torch.nn.Module, size: int, batch: int, rounds: int, steps: int = 5) -> float:
    """Best-of-`rounds` mean seconds of one training step (forward, backward, AdamW) on `batch` pairs."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, size), torch.randn(batch, COND)
    t = torch.randint(0, 1000, (batch,))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(x, t, y), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--edits", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hp = MeGHParams()
    old = build_denoiser(DenoiserConfig("dit", NEURON, COND, width=OLD["width"], depth=OLD["depth"], patch=OLD["patch"],
                                        heads=OLD["heads"]))
    rows = []
    for n in args.edits:
        width = mlp_width(n, hp.fitting.code_size, COND, hp.generator.depth, hp.generator.ratio)
        new = build_denoiser(DenoiserConfig("mlp", hp.fitting.code_size, COND, width=width, depth=hp.generator.depth))
        old_s, new_s = [], []
        for _ in range(args.rounds):  # interleaved: both see the same machine load
            old_s.append(step_seconds(old, NEURON, OLD["batch"], 1))
            new_s.append(step_seconds(new, hp.fitting.code_size, hp.generator.batch_size, 1))
        old_step, new_step = min(old_s), min(new_s)
        old_steps = OLD["epochs"] * n * CONDITIONS_PER_EDIT // OLD["batch"]
        new_steps = hp.diffusion_schedule(n)
        row = {
            "edits": n,
            "old": {"denoiser": "dit 128x3 patch 64 over 1,152 floats", "params": count_parameters(old),
                    "params_per_number": count_parameters(old) / (n * NEURON), "batch": OLD["batch"],
                    "step_s": round(old_step, 4), "steps": old_steps, "train_s": round(old_step * old_steps, 1),
                    "visits_per_edit": old_steps * OLD["batch"] / n},
            "new": {"denoiser": f"mlp {width}x{hp.generator.depth} over a {hp.fitting.code_size}-entry code",
                    "params": count_parameters(new), "params_per_number": count_parameters(new) / (n * hp.fitting.code_size),
                    "batch": hp.generator.batch_size, "step_s": round(new_step, 4), "steps": new_steps,
                    "train_s": round(new_step * new_steps, 1), "visits_per_edit": new_steps * hp.generator.batch_size / n},
        }
        row["step_ratio_old_over_new"] = round(old_step / new_step, 2)
        row["train_ratio_old_over_new"] = round(row["old"]["train_s"] / row["new"]["train_s"], 2)
        print(row, flush=True)
        rows.append(row)
    atomic_write_json(args.out, {
        "torch_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version()},
        "rows": rows,
    })


if __name__ == "__main__":
    main()
