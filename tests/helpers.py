"""Test-only helpers."""

from __future__ import annotations

import torch


def target_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over each row's target tokens (next-token shift applied); shape [batch]."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    logp = torch.log_softmax(shift_logits, dim=-1)
    tok = logp.gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(tok * mask).sum(1) / mask.sum(1).clamp(min=1)


def make_result(
    editor: str = "memit", dataset: str = "counterfact", scale: int = 20, *, pre: dict | None = None,
    post: dict | None = None, overrides: tuple[str, ...] = (), hparams: dict | None = None, seed: int = 0,
    mode: str = "batch", batch_size: int | None = None, case_filter: str | None = None, stats: dict | None = None,
    memory: dict | None = None, hardware: dict | None = None, cases: tuple[dict, ...] = (),
):
    """A minimal valid results file (kebench.results.RunResult) as a run made today would record it, without
    running anything: `hparams` default to today's defaults of `editor`, and the identity is derived from
    them as the runner derives it. Metrics, costs and provenance are placeholders; no per-case records
    unless `cases` are given."""
    from kebench import __version__
    from kebench.editor import EDITORS
    from kebench.results import (
        EditStep, Hardware, Memory, Metrics, ModelInfo, Provenance, RunInfo, RunResult, hparams_record, run_identity,
    )
    from kebench.runner import RunConfig

    cfg = RunConfig(editor=editor, dataset=dataset, scale=scale, mode=mode, batch_size=batch_size, seed=seed,
                    hparam_overrides=tuple(overrides), case_filter=case_filter, general=False)
    run = RunInfo.from_config(cfg, n_cases=scale, n_requests=scale)
    defaults = hparams_record(EDITORS.get(editor).default_hparams("default"))
    recorded = defaults if hparams is None else hparams
    post = post or {"efficacy_success": 0.9}
    return RunResult(
        kebench_version=__version__,
        run=run,
        identity=run_identity(editor, run, recorded, defaults),
        provenance=Provenance(
            model=ModelInfo(name="default", source="test", model_type="llama", weights_sha256="0" * 64, dtype="torch.float32"),
            data={"files": []}, git={"commit": None, "dirty": None}, packages={"kebench": __version__},
            hardware=Hardware(**{"platform": "test", "processor": "test", "cpu_count": 2, "torch_threads": 1,
                                 "device": "cpu", **(hardware or {})}),
            started_at="2025-01-01T00:00:00+00:00", finished_at="2025-01-01T00:00:12+00:00", resumed=False,
        ),
        hparams=recorded,
        editor=editor,
        timings_s={"total": 12.0},
        seconds_per_edit=0.5,
        memory=Memory(**(memory or {"peak_rss_mb": 2048.0})),
        editor_stats=(EditStep(n_requests=scale, seconds=10.0, stats=stats or {}),),
        restore_bit_exact=True,
        metrics=Metrics(pre=pre or {k: 0.4 for k in post}, post=post),
        cases=tuple(cases),
    )


def as_version_1(result) -> dict:
    """`result` as a schema_version 1 file wrote it: no identity block (readers derive it)."""
    data = result.to_json()
    del data["identity"]
    return {**data, "schema_version": 1}
