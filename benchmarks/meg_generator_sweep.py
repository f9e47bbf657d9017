"""MeG's generator settings against the neurons it must reproduce: median relative error of generated vs fitted
neurons (each edit's bare query) for a grid of diffusion settings, on the real training pairs of
`kebench run --editor meg --dataset counterfact --scale N`.

The pairs (fitted neurons, neuron code, query conditions) are made the way that run makes them: the editor's
defaults, its cached neuron fits and tuned encoder, stopped where its generator would be trained. They are kept in
`--inputs` so that later sweeps start at once. Each variant changes the editor's generator settings (`--hparam`
names without the `generator.` prefix: lr, visits, batch_size, width, depth, ratio, prediction, ema) and is
trained and scored in turn; each row records the settings it resolved to (the defaults move), the output file is
rewritten after each one, and a variant whose settings are already in it is skipped.

    python benchmarks/meg_generator_sweep.py --scale 1000 --out results/benchmarks/meg_generator_sweep_n1000.json \\
        --variant '{}' --variant '{"lr": 0.005}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from editors.meg.code import NeuronCode, relative_error
from editors.meg.denoiser import DenoiserConfig, count_parameters, mlp_width
from editors.meg.diffusion import DiffusionGenerator, DiffusionSettings
from editors.meg.editor import MeGEditor
from kebench.io import atomic_torch_save, atomic_write_json
from kebench.runner import case_requests
from kebench.suites import get_suite


class _Inputs(Exception):
    """Raised from the editor's generator stage, carrying what it was about to train on."""

    def __init__(self, pairs: dict) -> None:
        super().__init__("generator inputs")
        self.pairs = pairs


def generator_inputs(suite_name: str, scale: int, seed: int) -> dict:
    """The generator's training pairs of `kebench run --editor meg --dataset SUITE --scale N` (defaults, seed)."""
    from kebench.models.load import load_model

    suite = get_suite(suite_name)
    requests = case_requests(suite.sample(suite.load(None, None).cases, scale, seed))
    editor = MeGEditor(MeGEditor.default_hparams("default", suite))
    editor.plan(requests)

    def stop(self, vectors, code, cond, cond_edit, requests, device, cond_noise=0.0):  # noqa: ANN001
        raise _Inputs({"vectors": vectors, "code": dataclasses.asdict(code), "cond": cond, "cond_edit": cond_edit,
                       "cond_noise": cond_noise})

    editor._generator = stop.__get__(editor)  # the stage after which nothing else is needed
    try:
        editor.apply(load_model("default", device="cpu"), requests)
    except _Inputs as found:
        return found.pairs
    raise RuntimeError("MeG finished without reaching its generator stage")


def resolved(pairs: dict, variant: dict, defaults: MeGEditor) -> dict:
    """The generator settings `variant` resolves to over the editor's current defaults (width and steps sized)."""
    g = dataclasses.replace(defaults.hparams.generator, **variant)
    n, size, cond_dim = len(pairs["vectors"]), len(pairs["code"]["scales"]), pairs["cond"].shape[1]
    return {
        "denoiser": g.denoiser, "width": g.width or mlp_width(n, size, cond_dim, g.depth, g.ratio), "depth": g.depth,
        "lr": g.lr, "batch_size": g.batch_size, "steps": g.steps or max(100, -(-g.visits * n // g.batch_size)),
        "prediction": g.prediction, "ema": g.ema, "sample_steps": g.sample_steps,
    }


def score_variant(pairs: dict, variant: dict, defaults: MeGEditor) -> dict:
    """Train the generator with `variant`'s settings over the defaults; its reconstruction error and cost."""
    g = dataclasses.replace(defaults.hparams.generator, **variant)
    settings_used = resolved(pairs, variant, defaults)
    code = NeuronCode(**pairs["code"])
    vectors, cond, cond_edit = pairs["vectors"], pairs["cond"], pairs["cond_edit"]
    n = len(vectors)
    width, steps = settings_used["width"], settings_used["steps"]
    settings = DiffusionSettings(
        steps=steps, batch_size=g.batch_size, lr=g.lr, ema=g.ema, prediction=g.prediction, sample_steps=g.sample_steps,
        seed=defaults.hparams.seed, cond_noise=pairs["cond_noise"], select_every=g.select_every or max(1, steps // 5),
    )
    model = DiffusionGenerator(DenoiserConfig(g.denoiser, code.size, cond.shape[1], width=width, depth=g.depth,
                                              patch=g.patch, heads=g.heads), settings, code)
    t0 = time.perf_counter()
    stats = model.fit(vectors, cond, cond_edit)
    seconds = time.perf_counter() - t0
    first = torch.full((n,), len(cond_edit), dtype=torch.long)  # each edit's bare query: its first condition
    first.scatter_reduce_(0, cond_edit.long(), torch.arange(len(cond_edit)), reduce="amin")
    with torch.no_grad():
        error = relative_error(model.sample(cond[first]), vectors)
    return {
        "variant": variant, "settings": settings_used, "width": width, "params": count_parameters(model.model),
        "params_per_number": round(count_parameters(model.model) / (n * code.size), 3), "steps": steps,
        "visits_per_edit": round(steps * g.batch_size / n, 1), "train_s": round(seconds, 1),
        "relative_error_median": round(float(error.median()), 4),
        "relative_error_p90": round(float(error.quantile(0.9)), 4),
        "loss_last": round(stats["diffusion_loss_last"], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="counterfact")
    ap.add_argument("--scale", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", action="append", default=[], help="JSON object of generator settings ('{}': defaults)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--inputs", type=Path, default=None, help="where the training pairs are kept (default: beside --out)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    inputs = args.inputs or args.out.with_suffix(".pairs.pt")
    if inputs.is_file():
        pairs = torch.load(inputs, weights_only=False)
    else:
        pairs = generator_inputs(args.suite, args.scale, args.seed)
        atomic_torch_save(inputs, pairs)
    defaults = MeGEditor(MeGEditor.default_hparams("default", get_suite(args.suite)))
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    report.update({
        "suite": args.suite, "scale": args.scale, "seed": args.seed, "torch_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "metric": "median relative L2 error of generated vs fitted neurons on each edit's bare query",
    })
    done = {json.dumps(r["settings"], sort_keys=True) for r in report["rows"]}
    for text in args.variant or ["{}"]:
        variant = json.loads(text)
        if json.dumps(resolved(pairs, variant, defaults), sort_keys=True) in done:
            continue
        row = score_variant(pairs, variant, defaults)
        print(json.dumps(row), flush=True)
        report["rows"].append(row)
        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
