"""MeG's generator settings against the neurons it must reproduce: median relative error of generated vs fitted
neurons (each edit's bare query) for a grid of diffusion settings, on the real training pairs of
`kebench run --editor meg --dataset counterfact --scale N`.

The pairs (fitted neurons, neuron code, query conditions) are made the way that run makes them: the editor's
defaults, its cached neuron fits and tuned encoder, stopped where its generator would be trained. They are kept in
`--inputs` so that later sweeps start at once. Each variant changes the editor's generator settings (`--hparam`
names without the `generator.` prefix: lr, visits, batch_size, width, depth, ratio, edits_per_expert, prediction, ema) and is
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
from editors.meg.config import MeGHParams
from editors.meg.diffusion import first_conditions
from editors.meg.editor import MeGEditor
from editors.meg.experts import expert_count, train_experts
from kebench.config import with_overrides
from kebench.errors import ConfigError
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


def resolved(pairs: dict, hparams: MeGHParams) -> dict:
    """The summary of the generator `hparams` give for these pairs, as the editor builds it (width and steps: those of
    one expert of average size, where there are several)."""
    n, code_size, cond_dim = len(pairs["vectors"]), len(pairs["code"]["scales"]), pairs["cond"].shape[1]
    k = expert_count(n, hparams.generator.edits_per_expert)
    cfg, settings = hparams.denoiser_config(max(1, n // k), code_size, cond_dim), hparams.diffusion_settings(max(1, n // k))
    return {
        "denoiser": cfg.kind, "width": cfg.width, "depth": cfg.depth, "lr": settings.lr,
        "batch_size": settings.batch_size, "steps": settings.steps, "prediction": settings.prediction,
        "ema": settings.ema, "sample_steps": settings.sample_steps, **({"experts": k} if k > 1 else {}),
    }


def score_variant(pairs: dict, variant: dict, hparams: MeGHParams) -> dict:
    """Train the generator with `hparams` (the defaults with `variant` in place); its reconstruction error and cost."""
    summary = resolved(pairs, hparams)
    code = NeuronCode(**pairs["code"])
    vectors, cond, cond_edit = pairs["vectors"], pairs["cond"], pairs["cond_edit"]
    n = len(vectors)
    t0 = time.perf_counter()
    mixture, stats = train_experts(hparams, vectors, code, cond, cond_edit, n, torch.device("cpu"), pairs["cond_noise"])
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        error = relative_error(mixture.sample(cond[first_conditions(cond_edit)]), vectors)
    return {
        "variant": variant, "settings": summary, "width": summary["width"], "params": stats["diffusion_params"],
        "params_per_number": round(stats["diffusion_params_per_number"], 3), "steps": stats["diffusion_steps"],
        "visits_per_edit": round(stats["diffusion_visits_per_edit"], 1), "train_s": round(seconds, 1),
        "relative_error_median": round(float(error.median()), 4),
        "relative_error_p90": round(float(error.quantile(0.9)), 4),
        "loss_last": round(stats["diffusion_loss_last"], 4),
        **({"router_agreement": round(stats["diffusion_router_agreement"], 4)} if "diffusion_router_agreement" in stats else {}),
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
    defaults = MeGEditor.default_hparams("default", get_suite(args.suite))
    variants = []
    for text in args.variant or ["{}"]:
        try:
            variant = json.loads(text)
        except json.JSONDecodeError as exc:
            ap.error(f"--variant {text!r} is not JSON ({exc.msg}); write e.g. '{{\"lr\": 0.005}}'")
        if not isinstance(variant, dict):
            ap.error(f"--variant {text!r} must be a JSON object of generator settings, e.g. '{{\"lr\": 0.005}}'")
        try:
            variants.append((variant, with_overrides(defaults, {f"generator.{k}": v for k, v in variant.items()})))
        except ConfigError as exc:
            ap.error(str(exc))
    torch.set_num_threads(args.threads)
    inputs = args.inputs or args.out.with_suffix(".pairs.pt")
    if inputs.is_file():
        pairs = torch.load(inputs, weights_only=False)
    else:
        pairs = generator_inputs(args.suite, args.scale, args.seed)
        atomic_torch_save(inputs, pairs)
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    report.update({
        "suite": args.suite, "scale": args.scale, "seed": args.seed, "torch_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "metric": "median relative L2 error of generated vs fitted neurons on each edit's bare query",
    })
    done = {json.dumps(r["settings"], sort_keys=True) for r in report["rows"]}
    for variant, hparams in variants:
        if json.dumps(resolved(pairs, hparams), sort_keys=True) in done:
            continue
        row = score_variant(pairs, variant, hparams)
        print(json.dumps(row), flush=True)
        report["rows"].append(row)
        atomic_write_json(args.out, report)


if __name__ == "__main__":
    main()
