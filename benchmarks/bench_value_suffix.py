"""Target-value fitting (MEMIT/AlphaEdit's dominant CPU cost) on whole rows vs on the suffixes from the lookup.

Same edits, same model, same process, side by side: the values are fitted once running every
position of every row at each step (split=False) and once with the positions before the lookup
cached and only the suffix run (split=True, the default; editors/memit/suffix.py), each
followed by the same MEMIT update, then compared on
  - fitting seconds (and the ratio),
  - agreement of the fitted δ (cosine and relative difference per edit; the two differ only in
    summation order),
  - convergence and efficacy of the resulting edit (P(target_new) > P(target_true) on the edit prompt).

    python benchmarks/bench_value_suffix.py results/benchmarks/value_suffix.json --edits 16 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench_memit import fit_and_edit
from bench_setup import load_bench_model, machine_record, model_arguments
from editors.memit import MEMITEditor
from editors.memit.prompts import build_batch
from editors.memit.suffix import SuffixRows
from kebench.suites import load_cases
from kebench.io import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(ap)
    ap.add_argument("--suites", nargs="+", default=["counterfact", "zsre"])
    args = ap.parse_args()
    lm = load_bench_model(args)
    editor = MEMITEditor(MEMITEditor.default_hparams(lm.name))
    editor.covariance(lm)  # cached on disk after the first run
    result: dict = {**machine_record(lm), "n_edits": args.edits, "suites": {}}
    for suite in args.suites:
        requests = [c.request for c in load_cases(suite)[: args.edits]]
        batch = build_batch(lm.tokenizer, requests, editor.prefixes(lm))
        cut = SuffixRows.cut(batch, split=True)
        t0 = time.perf_counter()
        whole, v_whole = fit_and_edit(lm, editor, batch, requests, len(requests), split=False)
        suffix, v_suffix = fit_and_edit(lm, editor, batch, requests, len(requests), split=True)
        cos = torch.nn.functional.cosine_similarity(v_whole.delta, v_suffix.delta, dim=1)
        rel = (v_suffix.delta - v_whole.delta).norm(dim=1) / v_whole.delta.norm(dim=1).clamp(min=1e-12)
        result["suites"][suite] = {
            "padded_row_width": batch.input_ids.shape[1],
            "padded_suffix_width": cut.input_ids.shape[1],
            "whole_rows": whole,
            "suffixes": suffix,
            "speedup": round(whole["fit_seconds"] / suffix["fit_seconds"], 2),
            "delta_cosine_min": round(float(cos.min()), 6),
            "delta_relative_difference_max": round(float(rel.max()), 6),
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
        print(suite, json.dumps(result["suites"][suite]), flush=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
