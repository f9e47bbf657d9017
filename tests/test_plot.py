"""The scaling figures: a colour per editor and a line style per mode/device for default runs,
ablations (runs with overrides) in a figure of their own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kebench.compare import ResultSummary, summarize
from kebench.plot import plot_scaling, scaling_series, style_maps

from tests.helpers import make_result


def _run(editor, scale, mode="batch", overrides=(), dataset="counterfact", device="cpu", eff=0.9):
    post = {"efficacy_success": eff, "paraphrase_success": 0.5, "neighbourhood_success": 0.8, "score": 0.6}
    return ResultSummary(
        path=Path(f"{editor}-{scale}.json"), editor=editor, dataset=dataset, scale=scale, mode=mode, model="default",
        seed=0, pre={k: 0.4 for k in post}, post=post, seconds_per_edit=0.5, total_seconds=10.0,
        overrides=tuple(overrides), peak_memory_mb=2048.0, device=device,
    )


RUNS = [
    _run("memit", 100), _run("memit", 1000), _run("memit", 1000, mode="sequential-b100"),
    _run("memit", 1000, device="NVIDIA H200"),
    _run("alphaedit", 100), _run("alphaedit", 1000),
    _run("meg", 100), _run("meg", 1000),
    _run("meg", 1000, overrides=["gate.kind=similarity"]), _run("meg", 1000, overrides=["generator.kind=knn"]),
    _run("alphaedit", 1000, overrides=["L2=1"]),
    _run("none", 100),
]


def test_default_runs_get_a_colour_per_editor_and_a_line_style_per_mode_and_device():
    series = [s for s in scaling_series(RUNS) if s.figure == "default"]
    assert all("[" not in s.label for s in series)
    colour = {}
    for s in series:
        colour.setdefault(s.editor, set()).add(s.color)
    assert all(len(c) == 1 for c in colour.values()), colour  # one colour per editor ...
    assert len({next(iter(c)) for c in colour.values()}) == len(colour) == 4  # ... and no two editors share one
    memit = {s.mode: (s.linestyle, s.marker) for s in series if s.editor == "memit"}
    assert set(memit) == {"batch", "sequential-b100", "batch @ NVIDIA H200"}
    assert len(set(memit.values())) == 3 and memit["batch"] == ("-", "o")
    assert [r.scale for s in series if s.editor == "memit" and s.mode == "batch" for r in s.points] == [100, 1000]


def test_ablations_go_to_a_figure_of_their_own_beside_their_editors_defaults():
    series = scaling_series(RUNS)
    ablations = [s for s in series if s.figure == "ablations" and not s.reference]
    assert {s.variant for s in ablations} == {"meg [gate.kind=similarity]", "meg [generator.kind=knn]", "alphaedit [L2=1]"}
    assert len({s.color for s in ablations}) == 3
    references = {s.editor for s in series if s.figure == "ablations" and s.reference}
    assert references == {"meg", "alphaedit"}  # memit has no ablation: not drawn there


def test_an_editor_keeps_its_colour_and_a_mode_its_style_across_suites():
    zsre = [_run("meg", 100, dataset="zsre"), _run("none", 100, dataset="zsre")]
    colors, styles = style_maps(RUNS + zsre)
    by_suite = [scaling_series(runs, colors, styles) for runs in (RUNS, zsre)]
    meg = [next(s.color for s in series if s.editor == "meg" and s.figure == "default") for series in by_suite]
    assert meg[0] == meg[1]


def test_plot_scaling_writes_the_ablations_as_a_separate_figure(tmp_path):
    zsre = [_run("memit", 100, dataset="zsre"), _run("memit", 1000, dataset="zsre")]
    written = plot_scaling(RUNS + zsre, tmp_path)
    assert [p.name for p in written] == ["scaling_counterfact.png", "scaling_counterfact_ablations.png", "scaling_zsre.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_retention_figure_from_eval_at_runs(tmp_path):
    from kebench.plot import plot_retention
    from kebench.results import Retention, RetentionPoint

    def run(editor, drop):
        points = tuple(RetentionPoint(cases=n, edits=n, metrics={"score": 0.9 - drop * i}, general={
                           "perplexity": 40 + 5 * i, "retained_knowledge": 1 - 0.1 * i, "generic_fluency": 5.0})
                       for i, n in enumerate((100, 200, 300)))
        retention = Retention(eval_at="immediate,100,200", points=points, immediate={"score": 0.95})
        return dataclasses.replace(make_result(editor, scale=300, mode="sequential", batch_size=100), retention=retention)

    runs = {"memit.json": run("memit", 0.2), "alphaedit.json": run("alphaedit", 0.05), "ft.json": make_result("ft")}
    written = plot_retention([summarize(tmp_path / name, result) for name, result in runs.items()], tmp_path)
    assert [p.name for p in written] == ["retention_counterfact.png"] and written[0].stat().st_size > 10_000
