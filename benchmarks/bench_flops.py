"""How close each costly phase comes to this machine's physical limit: FLOP utilisation.

The limit is measured, not looked up: the best float32 matmul throughput over a few shapes
(square, and the model's own FFN shape) with the same thread count. Each phase then runs twice
on the same inputs in the same process: once under torch's FlopCounterMode (which counts the
matmul/attention FLOPs the phase really executes, padding and early stopping included) and once
timed. utilisation = counted FLOPs / phase seconds / peak FLOP/s. Elementwise work is not
counted, so utilisation is a lower bound on how busy the machine was.

    python benchmarks/bench_flops.py results/benchmarks/flops_1thread.json --edits 16 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from editors.meg.config import MeGHParams
from editors.meg.fitting import fit_neurons
from editors.meg.neuron import NeuronSpec
from editors.memit import MEMITEditor
from editors.memit.prompts import build_batch
from editors.memit.values import fit_target_values
from kebench.io import atomic_write_json
from kebench.models.load import load_model
from kebench.stats import layer_covariance
from kebench.suites import get_suite, load_cases


def matmul_peak(shapes: list[tuple[int, int, int]], repeats: int = 5) -> dict:
    """Best GFLOP/s of float32 (m×k)@(k×n) over `shapes` (after a warm-up)."""
    best, per_shape = 0.0, {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        gflops = 2 * m * k * n / min(times) / 1e9
        per_shape[f"{m}x{k}x{n}"] = round(gflops, 1)
        best = max(best, gflops)
    return {"gflops": round(best, 1), "per_shape": per_shape}


def measure(fn: Callable[[], object]) -> dict:
    """Counted FLOPs (one run) and wall seconds (a second, identical run)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    flops = counter.get_total_flops()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return {"gflop": round(flops / 1e9, 2), "seconds": round(seconds, 2), "gflops": round(flops / seconds / 1e9, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="where to write the JSON results (a PNG is written beside it)")
    ap.add_argument("--edits", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stats-tokens", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    lm = load_model(None)
    d, d_ff = lm.adapter.hidden_size, lm.adapter.key_size
    peak = matmul_peak([(1024, 1024, 1024), (2048, 2048, 2048), (4096, d, d_ff), (4096, d_ff, d)])
    print("peak", peak, flush=True)

    cases = load_cases("counterfact")[: args.edits]
    requests = [c.request for c in cases]
    memit = MEMITEditor(MEMITEditor.default_hparams(lm.name))
    hp = memit.hparams
    memit.covariance(lm)
    batch = build_batch(lm.tokenizer, requests, memit.prefixes(lm))
    vcfg = dataclasses.replace(hp, v_edits_per_batch=len(requests))
    meg = MeGHParams()
    layer = meg.layer_for(lm.adapter.num_layers)
    suite = get_suite("counterfact")
    refs = suite.references(lm, cases)

    phases: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        phases["key statistics (forward, per token)"] = measure(
            lambda: layer_covariance(lm, hp.layers, n_tokens=args.stats_tokens, seq_len=hp.stats_seq_len,
                                     cache_dir=Path(tmp) / str(time.perf_counter_ns()))
        )
    phases["MEMIT target values (fwd+bwd)"] = measure(lambda: fit_target_values(lm, batch, hp.layers[-1], vcfg))
    phases["MeG neuron fitting (fwd+bwd)"] = measure(
        lambda: fit_neurons(lm, requests, NeuronSpec(d, meg.activation), layer, lr=meg.fitting.lr, max_steps=meg.fitting.max_steps,
                            nll_threshold=meg.fitting.nll_threshold, batch_size=len(requests), context_prefixes=meg.fitting.context_prefixes)
    )
    phases["CounterFact evaluation (forward)"] = measure(lambda: suite.evaluate(lm, cases, refs, None))
    for name, p in phases.items():
        p["utilisation"] = round(p["gflops"] / peak["gflops"], 3)
        print(name, p, flush=True)

    result = {
        "model": lm.name,
        "weights_sha256": lm.weights_sha256,
        "n_edits": len(requests),
        "torch_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__},
        "matmul_peak_fp32": peak,
        "phases": phases,
        "note": "FLOPs counted by torch FlopCounterMode (matmul, attention); elementwise work not counted",
    }
    atomic_write_json(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["phases"])
    util = [100 * result["phases"][n]["utilisation"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(names, util, color="tab:blue")
    ax.set_xlabel(f"% of measured fp32 matmul peak ({result['matmul_peak_fp32']['gflops']} GFLOP/s, "
                  f"{result['torch_threads']} thread{'s' * (result['torch_threads'] > 1)})")
    ax.set_xlim(0, 100)
    for y, u in enumerate(util):
        ax.text(u + 1, y, f"{u:.0f}%", va="center")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
