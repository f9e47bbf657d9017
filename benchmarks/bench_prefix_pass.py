"""The prefix pass of MEMIT/AlphaEdit's target-value fit: all rows left-padded to the longest
prefix in one forward vs rows of each prefix length run together, unpadded (kebench's).

Before the δ steps, every row's positions up to its lookup run once through the whole model to
fill the key/value cache the steps reuse (editors/memit/suffix.py). A group's rows differ in
prefix length (the context prefix, then the prompt up to the subject), so one padded pass spends
much of its work on padding. Same groups of edits, same process, alternating, compared on
  - seconds per group (and the ratio),
  - the padded pass's wasted share of positions,
  - agreement of the cached keys/values at every real position.

    python benchmarks/bench_prefix_pass.py results/benchmarks/prefix_pass.json --edits 256 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench_setup import load_bench_model, machine_record, model_arguments
from editors.memit import MEMITEditor
from editors.memit.prompts import build_batch
from editors.memit.suffix import SuffixRows, _cache_tensors, edits_by_suffix_width
from kebench.suites import load_cases
from kebench.hooks import head_at
from kebench.io import atomic_write_json


@torch.no_grad()
def padded_pass(lm, batch, cut: SuffixRows) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One forward over every row's prefix, left-padded to the longest (the previous way)."""
    real = cut.prefix_cols >= 0
    positions = cut.prefix_cols.clamp(min=0)
    one = torch.zeros(1, dtype=torch.long, device=lm.device)
    with head_at(lm.model, one, one):
        out = lm.model(input_ids=(batch.input_ids.gather(1, positions) * real).to(lm.device),
                       attention_mask=real.long().to(lm.device), position_ids=positions.to(lm.device), use_cache=True)
    return _cache_tensors(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(ap)
    ap.add_argument("--suite", default="counterfact")
    ap.add_argument("--group", type=int, default=32, help="edits per group (v_edits_per_batch)")
    ap.add_argument("--slack", type=float, default=0.15, help="fill_prefix's padding allowance per pass")
    args = ap.parse_args()
    lm = load_bench_model(args)
    editor = MEMITEditor(MEMITEditor.default_hparams(lm.name))
    requests = [c.request for c in load_cases(args.suite)[: args.edits]]
    batch = build_batch(lm.tokenizer, requests, editor.prefixes(lm))
    order = edits_by_suffix_width(batch)
    padded_s = by_length_s = 0.0
    real_positions = padded_positions = 0
    max_diff = 0.0
    for first in range(0, batch.n_edits, args.group):
        group = batch.select(order[first : first + args.group])
        cut = SuffixRows.cut(group, split=True)
        real = cut.prefix_cols >= 0
        real_positions += int(real.sum())
        padded_positions += real.numel()
        t0 = time.perf_counter()
        ref = padded_pass(lm, group, cut)
        t1 = time.perf_counter()
        with torch.no_grad():
            cut.fill_prefix(lm.model, group, lm.device, args.slack)
        t2 = time.perf_counter()
        padded_s += t1 - t0
        by_length_s += t2 - t1
        for (k, v), (k0, v0) in zip(cut.kv, ref):
            for a, b in ((k, k0), (v, v0)):
                a, b = a.transpose(1, 2)[real], b.transpose(1, 2)[real]
                max_diff = max(max_diff, float((a - b).abs().max() / b.abs().max()))
    result = {
        **machine_record(lm), "suite": args.suite, "n_edits": batch.n_edits, "group": args.group, "slack": args.slack,
        "padded_wasted_share": round(1 - real_positions / padded_positions, 3),
        "padded_seconds": round(padded_s, 2), "by_length_seconds": round(by_length_s, 2),
        "speedup": round(padded_s / by_length_s, 2),
        "kv_relative_difference_max": max_diff,
    }
    print(json.dumps(result, indent=1), flush=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
