"""MEMIT cost on this machine: batched vs one-at-a-time target-value fitting, and key statistics.

Same edits, same model, same process:
  1. target values fitted for all edits in one batch, then one-edit-at-a-time
     (v_edits_per_batch = n vs 1; each edit's optimisation is identical in both, see
     editors/memit/values.py), each followed by the same MEMIT update; efficacy of both
     (P(target_new) > P(target_true) by mean token NLL on the edit prompt);
  2. key statistics computed from scratch (fresh cache directory) vs loaded from the cache;
  3. the closed-form update with the blocks below the lowest edit layer run in every key read vs
     read once and replayed (keys.lower_states); both must write bit-identical weights.

    python benchmarks/bench_memit.py results/bench_memit.json --edits 16 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from bench_setup import load_bench_model, machine_record, model_arguments
from editors.memit import MEMITEditor
from editors.memit.keys import lower_states
from editors.memit.prompts import EditBatch, build_batch
from editors.memit.update import spread_updates
from editors.memit.values import TargetValues, fit_target_values
from kebench.suites import load_cases
from kebench.editor import WeightEditHandle
from kebench.io import atomic_write_json
from kebench.models.loaded import LoadedModel, exact_checksum
from kebench.scoring import score_targets
from kebench.stats import layer_covariance


def efficacy(lm: LoadedModel, requests) -> float:
    prompts = [r.text for r in requests]
    new = score_targets(lm, prompts, [r.target_new for r in requests])
    true = score_targets(lm, prompts, [r.target_true for r in requests])
    return 100.0 * sum(a.nll < b.nll for a, b in zip(new, true)) / len(requests)


def fit_and_edit(
    lm: LoadedModel, editor: MEMITEditor, batch: EditBatch, requests, edits_per_batch: int, split: bool | None = None
) -> tuple[dict, TargetValues]:
    """Fit the values (`split` as in fit_target_values), apply the MEMIT update, score efficacy, restore."""
    hp = editor.hparams
    cfg = dataclasses.replace(hp, v_edits_per_batch=edits_per_batch)
    values = fit_target_values(lm, batch, hp.layers[-1], cfg, split=split)
    handle = WeightEditHandle(lm.model, [lm.adapter.mlp_out_param_name(l) for l in hp.layers])
    t0 = time.perf_counter()
    spread_updates(lm, batch, values, hp.layers, editor.solver(lm), hp.rows_per_pass)
    update_s = time.perf_counter() - t0
    eff = efficacy(lm, requests)
    handle.restore()
    return {
        "edits_per_batch": edits_per_batch,
        "fit_seconds": round(values.seconds, 2),
        "fit_seconds_per_edit": round(values.seconds / len(requests), 3),
        "update_seconds": round(update_s, 2),
        "efficacy": round(eff, 1),
        **{k: round(v, 4) for k, v in values.stats().items()},
    }, values


def update_with_and_without_replay(
    lm: LoadedModel, editor: MEMITEditor, batch: EditBatch, values: TargetValues, repeats: int = 2
) -> dict:
    """Time spread_updates on the same fitted values, lower blocks recomputed vs replayed (alternating)."""
    hp = editor.hparams
    times: dict[str, list[float]] = {"recomputed": [], "replayed": []}
    weights: dict[str, str] = {}
    for _ in range(repeats):
        for mode in times:
            handle = WeightEditHandle(lm.model, [lm.adapter.mlp_out_param_name(l) for l in hp.layers])
            t0 = time.perf_counter()
            lower = lower_states(lm, batch, hp.layers[0] - 1, hp.rows_per_pass) if mode == "replayed" else None
            spread_updates(lm, batch, values, hp.layers, editor.solver(lm), hp.rows_per_pass, lower=lower)
            times[mode].append(time.perf_counter() - t0)
            weights[mode] = exact_checksum(lm.model)
            handle.restore()
    best = {mode: min(ts) for mode, ts in times.items()}
    return {
        "recomputed_seconds": round(best["recomputed"], 2),
        "replayed_seconds": round(best["replayed"], 2),
        "speedup": round(best["recomputed"] / best["replayed"], 2),
        "identical_weights": weights["recomputed"] == weights["replayed"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(ap)
    ap.add_argument("--suite", default="counterfact-rome")
    ap.add_argument("--stats-tokens", type=int, default=20_000, help="token budget of the timed statistics pass")
    args = ap.parse_args()
    lm = load_bench_model(args)
    editor = MEMITEditor(MEMITEditor.default_hparams(lm.name))
    hp = editor.hparams
    requests = [c.request for c in load_cases(args.suite)[: args.edits]]
    result: dict = {**machine_record(lm), "suite": args.suite, "n_edits": len(requests), "layers": list(hp.layers)}

    # key statistics: from scratch vs from the cache
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        layer_covariance(lm, hp.layers, n_tokens=args.stats_tokens, seq_len=hp.stats_seq_len, cache_dir=tmp)
        compute_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        layer_covariance(lm, hp.layers, n_tokens=args.stats_tokens, seq_len=hp.stats_seq_len, cache_dir=tmp)
        load_s = time.perf_counter() - t0
    result["stats"] = {
        "n_tokens": args.stats_tokens,
        "layers": list(hp.layers),
        "compute_seconds": round(compute_s, 2),
        "tokens_per_second": round(args.stats_tokens / compute_s, 1),
        "cache_load_seconds": round(load_s, 3),
    }
    print(result["stats"], flush=True)

    editor.covariance(lm)  # the editor's own statistics (cached on disk after the first run)
    batch = build_batch(lm.tokenizer, requests, editor.prefixes(lm))
    batched, values = fit_and_edit(lm, editor, batch, requests, len(requests))
    print("batched", batched, flush=True)
    single, _ = fit_and_edit(lm, editor, batch, requests, 1)
    print("one at a time", single, flush=True)
    result["value_fitting"] = {
        "batched": batched,
        "one_at_a_time": single,
        "speedup": round(single["fit_seconds"] / batched["fit_seconds"], 2),
    }
    result["update_lower_blocks"] = update_with_and_without_replay(lm, editor, batch, values)
    print("update", result["update_lower_blocks"], flush=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
