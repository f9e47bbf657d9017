"""MeG cost on this machine: batched vs one-at-a-time neuron fitting, and inference overhead.

Same edits, same model, same process:
  1. neuron fitting for all edits in one batch vs one edit at a time (each edit's
     optimisation is identical in both, see editors/meg/fitting.py), with convergence
     and oracle efficacy of both;
  2. the teacher-forced scoring pass over the same prompts (edit prompts, their
     paraphrases and neighbourhood prompts) unedited vs under `handle.conditioning`,
     cold (encoder + gate + generator run per new prompt) and warm (decisions cached).
     The generator's training length does not change its inference cost, so the handle
     is built with a short diffusion training (--hparam to change).

    python benchmarks/bench_meg.py results/bench_meg.json --edits 16 --threads 1
"""

from __future__ import annotations

import argparse
import time

from bench_setup import load_bench_model, machine_record, model_arguments
from editors.meg import MeGEditor
from editors.meg.fitting import fit_neurons
from editors.meg.neuron import NeuronSpec
from kebench.config import parse_override, with_overrides
from kebench.suites import load_cases
from kebench.io import atomic_write_json
from kebench.scoring import score_targets


def fitting(lm, requests, hp, layer: int, batch_size: int) -> dict:
    spec = NeuronSpec(lm.adapter.hidden_size, hp.activation)
    res = fit_neurons(
        lm, requests, spec, layer, lr=hp.fitting.lr, max_steps=hp.fitting.max_steps, nll_threshold=hp.fitting.nll_threshold,
        batch_size=batch_size, context_prefixes=hp.fitting.context_prefixes, seed=hp.fitting.seed,
    )
    s = res.summary()
    return {
        "edits_per_batch": batch_size,
        "fit_seconds": round(res.seconds, 2),
        "fit_seconds_per_edit": round(res.seconds / len(requests), 3),
        "converged": s["fit_converged"],
        "oracle_efficacy": s["oracle_efficacy"],
        "median_steps": s["fit_median_steps"],
    }


def timed_scoring(lm, prompts, targets, condition=None, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        score_targets(lm, prompts, targets, condition=condition)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(ap)
    ap.add_argument("--suite", default="counterfact")
    ap.add_argument("--hparam", action="append", default=["generator.steps=200"], help="MeG override key=value")
    ap.add_argument("--skip-fitting", action="store_true", help="only measure inference overhead")
    args = ap.parse_args()
    lm = load_bench_model(args)
    hp = MeGEditor.default_hparams(lm.name)
    hp = with_overrides(hp, dict(parse_override(o) for o in args.hparam))
    layer = hp.layer_for(lm.adapter.num_layers)
    cases = load_cases(args.suite)[: args.edits]
    requests = [c.request for c in cases]
    result: dict = {
        **machine_record(lm), "suite": args.suite, "n_edits": len(requests), "layer": layer, "hparam_overrides": args.hparam,
    }

    if not args.skip_fitting:
        batched = fitting(lm, requests, hp, layer, len(requests))
        print("batched", batched, flush=True)
        single = fitting(lm, requests, hp, layer, 1)
        print("one at a time", single, flush=True)
        result["fitting"] = {
            "batched": batched,
            "one_at_a_time": single,
            "speedup": round(single["fit_seconds"] / batched["fit_seconds"], 2),
        }

    handle = MeGEditor(hp).apply(lm, requests)
    result["apply_seconds"] = handle.stats["seconds"]
    prompts, targets = [], []
    for c in cases:
        for p in (c.prompt, *c.paraphrases, *(n.prompt for n in c.neighbourhood)):
            prompts.append(p)
            targets.append(c.target_new)
    unedited = timed_scoring(lm, prompts, targets, repeats=2)
    handle._cache.clear()  # cold: every prompt goes through encoder, gate and generator
    t0 = time.perf_counter()
    score_targets(lm, prompts, targets, condition=handle.conditioning)
    cold = time.perf_counter() - t0
    warm = timed_scoring(lm, prompts, targets, handle.conditioning, repeats=2)
    fired = handle.prompts_fired / max(handle.prompts_seen, 1)
    handle.restore()
    result["inference"] = {
        "prompts": len(prompts),
        "fired_fraction": round(fired, 3),
        "unedited_seconds": round(unedited, 3),
        "meg_cold_seconds": round(cold, 3),
        "meg_warm_seconds": round(warm, 3),
        "cold_overhead_ratio": round(cold / unedited, 2),
        "warm_overhead_ratio": round(warm / unedited, 2),
    }
    print("inference", result["inference"], flush=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
