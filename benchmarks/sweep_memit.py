"""Small sweep of MEMIT/AlphaEdit edit layers and covariance weight on the default model.

Target values depend on the edit layers (their top layer) but not on λ, so they are fitted
once per layer set and each λ (and AlphaEdit) is solved, scored and undone on top of them.
Scores are CounterFact's probability comparisons on the edited prompt (efficacy),
its paraphrases and its neighbourhood prompts, computed with kebench.scoring:

    python benchmarks/sweep_memit.py --cases 20 --layers 2-6 4-8 --lambdas 1000 4000 --out sweep.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence

import torch

from editors.alphaedit import AlphaEditEditor, AlphaEditHParams
from editors.memit import MEMITEditor, MemitHParams
from editors.memit.prompts import build_batch
from editors.memit.update import spread_updates
from editors.memit.values import fit_target_values
from kebench.data.case import EditCase
from kebench.suites import load_cases
from kebench.editor import WeightEditHandle
from kebench.io import atomic_write_json
from kebench.models.load import load_model
from kebench.models.loaded import LoadedModel
from kebench.scoring import score_targets


def counterfact_scores(lm: LoadedModel, cases: Sequence[EditCase]) -> dict[str, float]:
    """Efficacy / paraphrase / neighbourhood success (%) by mean-token NLL comparisons, and their
    harmonic mean (CounterFact's Score)."""
    prompts, targets, slots = [], [], []
    for ci, case in enumerate(cases):
        req = case.request
        probes = [("eff", req.text, True)] + [("para", p, True) for p in case.paraphrases]
        probes += [("neigh", p.prompt, False) for p in case.neighbourhood]
        for kind, prompt, new_wins in probes:
            slots.append((ci, kind, new_wins))
            prompts += [prompt, prompt]
            targets += [req.target_new, req.target_true]
    scores = score_targets(lm, prompts, targets, batch_size=64)
    per: dict[str, list[list[float]]] = {k: [[] for _ in cases] for k in ("eff", "para", "neigh")}
    for j, (ci, kind, new_wins) in enumerate(slots):
        nll_new, nll_true = scores[2 * j].nll, scores[2 * j + 1].nll
        per[kind][ci].append(float((nll_new < nll_true) == new_wins))
    out = {k: 100 * statistics.mean(statistics.mean(v) for v in vals if v) for k, vals in per.items()}
    out["score"] = statistics.harmonic_mean([max(out[k], 1e-9) for k in ("eff", "para", "neigh")])
    return {k: round(v, 1) for k, v in out.items()}


def parse_layers(text: str) -> tuple[int, ...]:
    lo, hi = (int(x) for x in text.split("-"))
    return tuple(range(lo, hi + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--suite", default="counterfact-rome")
    ap.add_argument("--layers", nargs="+", default=["2-6", "4-8", "8-12"])
    ap.add_argument("--lambdas", nargs="*", type=float, default=[1000.0, 4000.0, 15000.0])
    ap.add_argument("--alphaedit", action="store_true", help="also solve AlphaEdit on the same values")
    ap.add_argument("--hparam", nargs="*", default=[], help="key=value overrides of the fitting knobs")
    ap.add_argument("--thresholds", nargs="*", type=float, default=[2e-2], help="AlphaEdit null-space thresholds")
    ap.add_argument("--l2s", nargs="*", type=float, default=[10.0], help="AlphaEdit L2 values")
    ap.add_argument("--key-modes", nargs="+", default=["mean"], choices=["mean", "per_prefix"],
                    help="least squares over averaged keys (MEMIT) and/or every prefixed key")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy shared CPU)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    lm = load_model(None)
    cases = load_cases(args.suite)[: args.cases]
    requests = [c.request for c in cases]
    overrides = {k: json.loads(v) for k, v in (h.split("=", 1) for h in args.hparam)}
    rows: list[dict] = [{"config": "unedited", **counterfact_scores(lm, cases)}]
    print(rows[-1], flush=True)
    for spec in args.layers:
        layers = parse_layers(spec)
        hp = dataclasses.replace(MemitHParams(), layers=layers, **overrides)
        memit = MEMITEditor(hp)
        t0 = time.perf_counter()
        cov = memit.covariance(lm)
        t_stats = time.perf_counter() - t0
        batch = build_batch(lm.tokenizer, requests, memit.prefixes(lm))
        values = fit_target_values(lm, batch, layers[-1], hp)
        fit = {**values.stats(), "fit_s_per_edit": round(values.seconds / len(requests), 2), "stats_s": round(t_stats, 1)}
        print(spec, fit, flush=True)
        solvers = {f"memit λ={lam:g}": dataclasses.replace(hp, mom2_update_weight=lam) for lam in args.lambdas}
        editors = {name: MEMITEditor(h) for name, h in solvers.items()}
        if args.alphaedit:
            shared = {f.name: getattr(hp, f.name) for f in dataclasses.fields(hp) if f.name != "mom2_update_weight"}
            for thr in args.thresholds:
                for l2 in args.l2s:
                    editors[f"alphaedit thr={thr:g} L2={l2:g}"] = AlphaEditEditor(
                        AlphaEditHParams(**shared, nullspace_threshold=thr, L2=l2))
        for (name, editor), mode in ((item, m) for item in editors.items() for m in args.key_modes):
            editor._covariance.update(memit._covariance)  # same statistics, already loaded
            handle = WeightEditHandle(lm.model, [lm.adapter.mlp_out_param_name(l) for l in layers])
            t0 = time.perf_counter()
            spread = spread_updates(lm, batch, values, layers, editor.solver(lm), hp.rows_per_pass, mode == "per_prefix")
            t_upd = time.perf_counter() - t0
            scores = counterfact_scores(lm, cases)
            handle.restore()
            extra = {}
            if isinstance(editor, AlphaEditEditor):
                extra["null_space_dim"] = [editor.projector(lm, l)[1] for l in layers]
            rows.append({"layers": spec, "config": f"{name} keys={mode}", **scores, **fit, **extra,
                         "delta_missing_frac": round(spread["delta_missing_frac"], 3), "update_s": round(t_upd, 1)})
            print(rows[-1], flush=True)
        del cov
    if args.out:
        atomic_write_json(args.out, {"cases": args.cases, "suite": args.suite, "overrides": overrides, "rows": rows})


if __name__ == "__main__":
    main()
