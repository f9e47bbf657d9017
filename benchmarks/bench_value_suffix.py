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
import platform
import time
from pathlib import Path

import torch

from bench_memit import efficacy
from editors.memit import MEMITEditor
from editors.memit.prompts import build_batch
from editors.memit.suffix import SuffixRows
from editors.memit.update import spread_updates
from editors.memit.values import TargetValues, fit_target_values
from kebench.data.suites import load_cases
from kebench.editor import WeightEditHandle
from kebench.models.load import load_model


def fit(lm, editor: MEMITEditor, batch, requests, split: bool) -> tuple[dict, TargetValues]:
    hp = editor.hparams
    values = fit_target_values(lm, batch, hp.layers[-1], hp.value_config(), split=split)
    handle = WeightEditHandle(lm.model, [lm.adapter.mlp_out_param_name(l) for l in hp.layers])
    spread_updates(lm, batch, values, hp.layers, editor.solver(lm), hp.rows_per_pass)
    eff = efficacy(lm, requests)
    handle.restore()
    return {
        "fit_seconds": round(values.seconds, 2),
        "fit_seconds_per_edit": round(values.seconds / len(requests), 3),
        "efficacy": round(eff, 1),
        **{k: round(v, 4) for k, v in values.stats().items()},
    }, values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="where to write the JSON results")
    ap.add_argument("--model", default=None, help="model name/path (default: the embedded SmolLM2-135M)")
    ap.add_argument("--suites", nargs="+", default=["counterfact", "zsre"])
    ap.add_argument("--edits", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy shared CPU)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(args.model, device=args.device)
    editor = MEMITEditor(MEMITEditor.default_hparams(lm.name))
    editor.covariance(lm)  # cached on disk after the first run
    result: dict = {
        "model": lm.name,
        "weights_sha256": lm.weights_sha256,
        "n_edits": args.edits,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(lm.device) if lm.device.type == "cuda" else "cpu",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version()},
        "suites": {},
    }
    for suite in args.suites:
        requests = [c.request for c in load_cases(suite)[: args.edits]]
        batch = build_batch(lm.tokenizer, requests, editor.prefixes(lm))
        cut = SuffixRows.cut(batch, split=True)
        t0 = time.perf_counter()
        whole, v_whole = fit(lm, editor, batch, requests, split=False)
        suffix, v_suffix = fit(lm, editor, batch, requests, split=True)
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
