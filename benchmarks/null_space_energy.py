"""How much of each prompt set's MLP-key energy lies in AlphaEdit's null space, per edit layer.

AlphaEdit restricts ΔW to the span P of C₀'s small-eigenvalue directions, so that ΔW k₀ ≈ 0 for
the preserved keys k₀. That holds for a prompt only if its keys have little energy in P's span:
the fraction Σ‖P k‖² / Σ‖k‖² over its tokens. This script measures it for

- WikiText tokens that built C₀ (in-sample) and the next tokens of the same corpus (held out);
- the locality/neighbourhood prompts of ZsRE (NQ questions) and CounterFact, all tokens of
  prompt + answer (every position is scored);
- the edits' own keys (subject's last token, averaged over context prefixes as the editors do).

It also reports C₀'s spectrum: the null space is only "null" if the smallest eigenvalues are far
below the rest, i.e. if few directions hold almost none of the trace.

    python benchmarks/null_space_energy.py --cases 200 --out results/benchmarks/null_space_energy.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from editors.alphaedit import AlphaEditEditor
from editors.alphaedit.null_space import null_space_projector
from editors.memit.keys import edit_keys
from editors.memit.prompts import build_batch
from kebench.suites import load_cases
from kebench.hooks import StopForward, hooks, run_until_stopped
from kebench.io import atomic_write_json
from kebench.models.load import load_model
from kebench.models.loaded import LoadedModel
from kebench.stats import corpus_texts, token_chunks


@torch.no_grad()
def token_energy(lm: LoadedModel, sequences: Sequence[Sequence[int]], projectors: dict[int, torch.Tensor]) -> dict[int, float]:
    """Σ‖P k‖² / Σ‖k‖² over every token of `sequences`, per layer (one sequence per forward)."""
    inside = {layer: 0.0 for layer in projectors}
    total = {layer: 0.0 for layer in projectors}
    top = max(projectors)

    def make_hook(layer: int):
        def hook(_module, args):
            k = args[0].reshape(-1, args[0].shape[-1]).double().cpu()
            inside[layer] += float(((k @ projectors[layer]) * k).sum())  # kᵀ P k = ‖P k‖² (P a projector)
            total[layer] += float((k * k).sum())
            if layer == top:
                raise StopForward

        return hook

    with hooks(*(lm.adapter.mlp_out(layer).register_forward_pre_hook(make_hook(layer)) for layer in projectors)):
        for seq in sequences:
            ids = torch.tensor([list(seq)], dtype=torch.long, device=lm.device)
            run_until_stopped(lm.model, input_ids=ids, attention_mask=torch.ones_like(ids))
    return {layer: inside[layer] / total[layer] for layer in projectors}


def probe_sequences(lm: LoadedModel, suite: str, n_cases: int) -> list[list[int]]:
    """Tokens of prompt + first answer of each locality/neighbourhood probe of the first cases."""
    seqs = []
    for case in load_cases(suite)[:n_cases]:
        for probe in case.neighbourhood:
            seqs.append(lm.tokenizer(f"{probe.prompt} {probe.answer}")["input_ids"])
    return seqs


def spectrum_summary(cov: torch.Tensor) -> dict[str, float]:
    """Eigenvalue range of C₀ and how many of its smallest directions hold 0.1% / 1% / 5% of the trace."""
    evals = torch.linalg.eigvalsh(cov.double()).clamp(min=0)
    share = evals.cumsum(0) / evals.sum()
    out = {"eig_max": float(evals.max()), "eig_median": float(evals.median()), "eig_min": float(evals.min())}
    out.update({f"dims_holding_{f:g}": int((share <= f).sum()) for f in (1e-3, 1e-2, 5e-2)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=200, help="cases per suite (probes and edit keys)")
    ap.add_argument("--wiki-tokens", type=int, default=20_000, help="tokens of each WikiText sample")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = load_model(None)
    editor = AlphaEditEditor(AlphaEditEditor.default_hparams("default"))
    hp = editor.hparams
    cov = editor.covariance(lm, list(hp.layers))
    projectors, dims, spectrum = {}, {}, {}
    for layer in hp.layers:
        projectors[layer], dims[layer] = null_space_projector(cov[layer], hp.nullspace_threshold)
        spectrum[layer] = spectrum_summary(cov[layer])

    # the C₀ windows come first in the token stream; the held-out sample is the stretch after them
    chunks = token_chunks(lm.tokenizer, corpus_texts(hp.stats_corpus), hp.stats_n_tokens + args.wiki_tokens, hp.stats_seq_len)
    n_in = hp.stats_n_tokens // hp.stats_seq_len
    n_sample = max(1, args.wiki_tokens // hp.stats_seq_len)
    rows: dict[str, dict[int, float]] = {
        "wikitext (in C₀)": token_energy(lm, chunks[:n_sample], projectors),
        "wikitext (held out)": token_energy(lm, chunks[n_in + 1 : n_in + 1 + n_sample], projectors),
    }
    for suite in ("zsre", "counterfact"):
        rows[f"{suite} locality prompts"] = token_energy(lm, probe_sequences(lm, suite, args.cases), projectors)
        requests = [c.request for c in load_cases(suite)[: args.cases]]
        batch = build_batch(lm.tokenizer, requests, editor.prefixes(lm), with_targets=False, kl_prompt=None)
        energy = {}
        for layer in hp.layers:
            k = edit_keys(lm, batch, layer, hp.per_prefix_keys, hp.rows_per_pass)
            energy[layer] = float(((k @ projectors[layer]) * k).sum() / (k * k).sum())
        rows[f"{suite} edit keys"] = energy

    print(f"null-space dims (threshold {hp.nullspace_threshold:g}): {dims}")
    for layer, summary in spectrum.items():
        print(f"C₀ layer {layer}: " + ", ".join(f"{k} {v:.3g}" for k, v in summary.items()))
    print("% of key energy in the null space:")
    print(f"{'key set':28s}" + "".join(f"  L{layer:<5d}" for layer in hp.layers))
    for name, energy in rows.items():
        print(f"{name:28s}" + "".join(f"  {100 * energy[layer]:6.3f}" for layer in hp.layers))
    if args.out:
        out = {"threshold": hp.nullspace_threshold, "null_space_dim": dims, "spectrum": spectrum, "cases": args.cases,
               "wiki_tokens": args.wiki_tokens, "energy_in_null_space": rows}
        atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
