"""AlphaEdit in batch mode: the edited batch's keys read eagerly (right after the update, as the
authors' code does) vs only when a later batch needs them (kebench's default; never, in batch mode).

Same edits, same model, same process, alternating: one AlphaEdit apply whose keys are then read
(`state_dict()`, what a sequential step's checkpoint does) against one whose keys are not read.
The target values come from the fit cache after the first apply, so both time the update only.
Reports the seconds of each, their ratio, and whether the edited weights are bit-identical.

    python benchmarks/bench_alphaedit_keys.py results/benchmarks/alphaedit_keys.json --edits 32 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from bench_setup import load_bench_model, machine_record, model_arguments
from editors.alphaedit import AlphaEditEditor
from kebench.suites import load_cases
from kebench.io import atomic_write_json
from kebench.models.loaded import exact_checksum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(ap)
    ap.add_argument("--suite", default="counterfact")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    lm = load_bench_model(args)
    hp = dataclasses.replace(AlphaEditEditor.default_hparams(lm.name), update_checkpoint=False)
    requests = [c.request for c in load_cases(args.suite)[: args.edits]]
    AlphaEditEditor(hp).apply(lm, requests).restore()  # fits (or loads) the values and C₀ once
    times: dict[str, list[float]] = {"eager": [], "lazy": []}
    weights: dict[str, str] = {}
    for _ in range(args.repeats):
        for mode in ("eager", "lazy"):
            editor = AlphaEditEditor(hp)
            editor.covariance(lm)
            t0 = time.perf_counter()
            handle = editor.apply(lm, requests)
            if mode == "eager":
                editor.state_dict()  # reads the batch's keys at every edit layer
            times[mode].append(time.perf_counter() - t0)
            weights[mode] = exact_checksum(lm.model)
            handle.restore()
    result = {
        **machine_record(lm),
        "suite": args.suite,
        "n_edits": len(requests),
        "eager_seconds": [round(t, 2) for t in times["eager"]],
        "lazy_seconds": [round(t, 2) for t in times["lazy"]],
        "speedup": round(min(times["eager"]) / min(times["lazy"]), 2),
        "same_weights": weights["eager"] == weights["lazy"],
    }
    print(json.dumps(result), flush=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
