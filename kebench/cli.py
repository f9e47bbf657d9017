"""The `kebench` command line: run, compare, report, plot, stats, cache, list."""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kebench.errors import ConfigError, KebenchError

if TYPE_CHECKING:
    from kebench.compare import GateResult
    from kebench.results import RunResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="kebench: benchmark knowledge editors (MeG, MEMIT, AlphaEdit, FT) on CounterFact, ZsRE and MQuAKE.",
)
console = Console()
err_console = Console(stderr=True)




@app.command()
def run(
    editor: Annotated[str, typer.Option(help="Editor name (see `kebench list`).")],
    dataset: Annotated[str, typer.Option(help="Suite, e.g. counterfact, zsre, zsre-all, mquake (`kebench list` shows all); counterfact has 10,000 cases.")] = "counterfact",
    scale: Annotated[Optional[int], typer.Option(help="Number of cases, sampled by --seed (default: all).")] = None,
    case_filter: Annotated[Optional[str], typer.Option("--filter", help=(
        "Run only the cases a filter keeps; --scale then counts kept cases. known (CounterFact suites): "
        "those whose true object the unedited model already prefers."))] = None,
    model: Annotated[Optional[str], typer.Option(help="Hub id, HF folder or .gguf file (default: embedded SmolLM2-135M-Instruct).")] = None,
    mode: Annotated[str, typer.Option(help="batch: all cases in one edit; sequential: --batch-size cases per step.")] = "batch",
    batch_size: Annotated[Optional[int], typer.Option(help="Cases per editing step in sequential mode.")] = None,
    eval_at: Annotated[Optional[str], typer.Option(help=(
        "Sequential mode: also evaluate each step's cases right after their step (immediate) and every case edited "
        "so far at these case counts, e.g. immediate,500,1000 (retention; `kebench plot` draws the curve)."))] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seeds sampling, editors and evaluation (default 0).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help=(
        "Several seeds, e.g. 0,1,2: one run and one results file each (an --out path gets -s<seed> before .json); "
        "`kebench compare` pools them into one row."))] = None,
    out: Annotated[Optional[Path], typer.Option(help="Results JSON (default: runs/<editor>/<model>/<dataset>/...).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results file / checkpoint.")] = False,
    data_file: Annotated[Optional[Path], typer.Option(help="Run the suite on your own file (any supported format).")] = None,
    data_format: Annotated[Optional[str], typer.Option(help="Force the data format instead of detecting it.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    device_map: Annotated[Optional[str], typer.Option(help="Spread a large model over several GPUs with accelerate: auto, balanced, sequential.")] = None,
    hparam: Annotated[Optional[list[str]], typer.Option(help="Override an editor hyperparameter: key=value, a section's with a dot (gate.kind=similarity); repeatable.")] = None,
    hparams_file: Annotated[Optional[Path], typer.Option("--hparams-file", help=(
        "The editor's settings from your own YAML (e.g. for a model kebench has no file for) instead of its "
        "per-model file; --hparam still overrides single settings."))] = None,
    eval_batch_size: Annotated[int, typer.Option(help="Prompts per forward pass during evaluation.")] = 32,
    save_edits: Annotated[Optional[Path], typer.Option(help="Write the fitted edit to this folder.")] = None,
    load_edits: Annotated[Optional[Path], typer.Option(help="Evaluate an edit saved with --save-edits instead of fitting.")] = None,
    general: Annotated[bool, typer.Option(help=(
        "Measure general ability before and after editing: held-out WikiText perplexity, ROME's known facts "
        "retained, fluency on generic prompts (about a minute per measurement on a 2-core CPU)."))] = True,
    lm_eval: Annotated[Optional[str], typer.Option("--lm-eval", help=(
        "Also run lm-evaluation-harness tasks, e.g. arc_easy,hellaswag, on the unedited and the edited model in "
        "memory (optional extra: pip install \"kebench[lm-eval]\"; hub tasks need their data cached or a network)."))] = None,
    lm_eval_limit: Annotated[Optional[int], typer.Option("--lm-eval-limit", help="Documents per lm-eval task (default: all).")] = None,
    lm_eval_include: Annotated[Optional[Path], typer.Option("--lm-eval-include", help=(
        "A folder of lm-eval task YAMLs of your own (e.g. over local JSON files), added to lm-eval's tasks."))] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Edit a model with one editor on one suite and write a results JSON with full provenance.

    How long runs take with the default model on a 2-core CPU (measured; a GPU is 20-100x faster):
    ft on 10 cases about a minute; ft on 200 about 11 minutes; AlphaEdit on 1,000 CounterFact cases
    about 15 minutes, MEMIT about 2 hours; MeG on 1,000 about an hour, on 10,000 about 8 hours
    (fitting is cached and resumable); sequential runs add their steps. General ability adds about
    a minute before and one after editing (--no-general skips it). Every run resumes with --resume.

    Under `torchrun --nproc_per_node N -m kebench run ...` the evaluation is sharded over N processes.
    """
    from kebench import progress
    from kebench.distributed import init_shard
    from kebench.results import RunResult
    from kebench.runner import Run, RunConfig

    shard = init_shard(device)
    progress.set_enabled(not quiet and shard.is_main)
    if load_edits is not None and not load_edits.exists():
        raise KebenchError(f"--load-edits folder {load_edits} does not exist")
    chosen = _seed_list(seed, seeds, several_allowed=load_edits is None)
    cfg = RunConfig(
        editor=editor,
        dataset=dataset,
        scale=scale,
        model=model,
        mode=mode,
        batch_size=batch_size,
        seed=chosen[0],
        data_file=str(data_file) if data_file else None,
        data_format=data_format,
        device=device,
        dtype=dtype,
        hparam_overrides=tuple(hparam or ()),
        eval_batch_size=eval_batch_size,
        load_edits=str(load_edits) if load_edits else None,
        device_map=device_map,
        case_filter=case_filter,
        general=general,
        eval_at=eval_at,
        lm_eval=lm_eval,
        lm_eval_limit=lm_eval_limit,
        lm_eval_include=str(lm_eval_include) if lm_eval_include else None,
        hparams_file=str(hparams_file) if hparams_file else None,
    )
    # every seed's run set up (and its output checked) before the first one starts
    runners = [
        Run(replace(cfg, seed=s), _seeded(out, s, seeds), resume=resume, overwrite=overwrite,
            save_edits=_seeded(save_edits, s, seeds), shard=shard)
        for s in chosen
    ]
    for runner in runners:
        result = runner.execute()
        if shard.is_main:
            _print_summary(RunResult.from_json(result))
            console.print(f"results: [bold]{runner.out}[/bold]")


def _seed_list(seed: int | None, seeds: str | None, *, several_allowed: bool) -> list[int]:
    """The seeds to run: --seed N, or the comma-separated --seeds list (default: 0)."""
    if seeds is None:
        return [0 if seed is None else seed]
    if seed is not None:
        raise ConfigError("pass --seed N or --seeds A,B,C, not both")
    try:
        chosen = [int(part) for part in seeds.split(",")]
        if any(s < 0 for s in chosen):
            raise ValueError
    except ValueError:
        raise ConfigError(f"cannot read --seeds {seeds!r}; write seeds >= 0 as a comma-separated list, e.g. --seeds 0,1,2") from None
    twice = sorted({s for s in chosen if chosen.count(s) > 1})
    if twice:
        raise ConfigError(f"--seeds lists seed {twice[0]} more than once; give each seed once")
    if len(chosen) > 1 and not several_allowed:
        raise ConfigError("--load-edits evaluates one saved edit, fitted on one seed's cases; run it with one --seed")
    return chosen


def _seeded(path: Path | None, seed: int, seeds: str | None) -> Path | None:
    """`path` for one of several --seeds: results.json -> results-s1.json, a folder edits -> edits-s1."""
    if path is None or seeds is None:
        return path
    if path.suffix == ".json":
        return path.with_name(f"{path.stem}-s{seed}.json")
    return path.with_name(f"{path.name}-s{seed}")


def _print_summary(result: RunResult) -> None:
    from kebench.compare import metric_cell
    from kebench.diagnostics import summary_line
    from kebench.suites import get_suite

    suite = get_suite(result.run.dataset)
    table = Table(title=f"{result.editor} on {result.run.dataset} ({result.run.n_cases} cases)")
    table.add_column("metric")
    table.add_column("unedited", justify="right")
    table.add_column("edited", justify="right")
    pre, post = result.metrics.pre, result.metrics.post
    for name in suite.headline:
        if name in post:
            table.add_row(name, metric_cell(name, pre.get(name)), metric_cell(name, post[name]))
    general = result.metrics.general
    if general:
        g0, g1 = general["pre"], general["post"]
        table.add_row("perplexity (WikiText, held out)", f"{g0['perplexity']:.2f}", f"{g1['perplexity']:.2f}")
        table.add_row("known facts retained", f"{g0['known_facts']} known", metric_cell("retained_knowledge", g1["retained_knowledge"]))
        table.add_row("generic fluency", metric_cell("generic_fluency", g0["generic_fluency"]), metric_cell("generic_fluency", g1["generic_fluency"]))
    if result.metrics.lm_eval:
        from kebench.lm_eval_bridge import headline

        before, after = headline(result.metrics.lm_eval["pre"]), headline(result.metrics.lm_eval["post"])
        for name, value in after.items():
            table.add_row(f"lm-eval {name}", f"{before[name]:.4f}" if name in before else "", f"{value:.4f}")
    console.print(table)
    if general and general.get("alarm"):
        console.print(f"[bold red]warning:[/bold red] {escape(general['alarm'])}")
    t = result.timings_s
    console.print(
        "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()) + f"; {result.seconds_per_edit:.3f} s/edit"
    )
    weights = summary_line(asdict(step) for step in result.editor_stats)  # collapse diagnostics of weight editors
    if weights:
        console.print(weights)


@app.command()
def compare(
    results: Annotated[list[Path], typer.Argument(help="Results files or folders of them.")],
    markdown: Annotated[Optional[Path], typer.Option(help="Also write the tables (and scaling and retention plots) as markdown here.")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Also write a self-contained HTML report with the scaling and retention plots.")] = None,
    plots: Annotated[bool, typer.Option(help="Render scaling and retention plots for the markdown/HTML report.")] = True,
    ci: Annotated[bool, typer.Option("--ci", help=(
        "Show a run's edited values ± half the width of their bootstrap interval over cases (stored in the results "
        "file, or computed from its per-case records for older files)."))] = False,
    level: Annotated[float, typer.Option(help="Confidence level of the --ci intervals.")] = 0.95,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the --ci intervals.")] = 1000,
) -> None:
    """Show several results side by side: one table per suite, a row per editor / scale / mode.

    Runs that differ only in seed (`kebench run --seeds 0,1,2`) are pooled into one row: their mean ± the
    standard deviation across the seeds."""
    from kebench.compare import (
        CACHED_NOTE, comparison_tables, expand_paths, has_cached_fits, html_report, load_result, markdown_tables,
        plusminus_note,
    )
    from kebench.io import atomic_write_text
    from kebench.metrics.uncertainty import check_level
    from kebench.plot import plot_retention, plot_scaling

    if ci:
        check_level(level, resamples)
    summaries = [load_result(p, level=level if ci else None, n_resamples=resamples) for p in expand_paths(results)]
    tables = comparison_tables(summaries, ci=ci)
    note = plusminus_note(tables, level if ci else None)
    notes = [note] if note else []
    if console.is_terminal:
        for dataset, header, rows in tables:
            # every cell escaped: rich would read a label's `[familiarity=similarity]` as markup and drop it
            table = Table(title=f"{dataset}: edited (unedited) and lift, rates in %")
            for c in header:
                table.add_column(escape(c), justify="left" if c in ("editor", "mode") else "right")
            for row in rows:
                table.add_row(*(escape(cell) for cell in row))
            captions = ([CACHED_NOTE] if has_cached_fits(rows) else []) + notes
            if captions:
                table.caption = escape(" ".join(captions))
            console.print(table)
    else:  # piped (a CI log, a file): markdown tables, whole rows, never cut to the console's width
        print("Cells: edited (unedited) and the lift over the unedited model; rates in %.\n")
        print(markdown_tables(tables, notes=notes), end="", flush=True)
    for target, render in ((markdown, "markdown"), (html, "html")):
        if target is None:
            continue
        folder = target.parent / f"{target.stem}_plots"
        images = plot_scaling(summaries, folder) + plot_retention(summaries, folder) if plots else []
        text = (markdown_tables(tables, images, target.parent, notes) if render == "markdown"
                else html_report(tables, images, notes))
        atomic_write_text(target, text)
        console.print(f"{render}: {escape(str(target))}", soft_wrap=True)


class ReportFormat(str, Enum):
    markdown = "markdown"
    github = "github"


def _github_summary(gate: GateResult) -> str:
    """The gate's verdict for a GitHub job summary: a heading, PASS/FAIL, and only what failed (plus the changes
    beyond the tolerance that the paired bootstrap judged noise, and the runs judged by the tolerance alone)."""
    from kebench.compare import evidence, gate_method, metric_cell

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def rows(found: list) -> list[str]:
        out = ["| run | metric | reference | candidate | worse by | paired bootstrap |", "|---|---|---:|---:|---:|---|"]
        for r in found:
            lost = r.candidate != r.candidate  # NaN: the candidate did not report the metric
            out.append(
                f"| {cell(r.label)} | {r.metric} | {metric_cell(r.metric, r.baseline)} | "
                f"{'missing' if lost else metric_cell(r.metric, r.candidate)} | {'–' if lost else metric_cell(r.metric, abs(r.delta))} | "
                f"{'' if lost else cell(evidence(r, gate.level))} |"
            )
        return out

    judged = f" and real at the {gate.level:.0%} level" if gate.level is not None else ""
    lines = [
        "## kebench regression gate",
        "",
        f"{':x: **FAIL**' if gate.failed else ':white_check_mark: **PASS**'}: {len(gate.pairs)} run(s) compared with the reference, "
        f"{len(gate.regressions)} regression(s) beyond the tolerance ({gate.tolerance:g}){judged}, "
        f"{len(gate.missing)} reference run(s) without a candidate.",
        "",
    ]
    if gate.regressions:
        lines += rows(gate.regressions)
    if gate.noise:
        lines += [*([""] if gate.regressions else []), "Beyond the tolerance but within resampling noise (not regressions):",
                  "", *rows(gate.noise)]
    if gate.regressions or gate.noise:
        lines += ["", "Rates in % (changes in points), other metrics in their own unit; a drop is worse for a "
                  "higher-is-better metric, a rise for a lower-is-better one. " + gate_method(gate.level, gate.n_resamples)]
    if gate.unpaired:
        lines += ["", "Judged by the tolerance alone (their cases could not be paired):", ""]
        lines += [f"- `{label}`: {why}" for label, why in gate.unpaired]
    if gate.missing:
        lines += ["", "Reference runs without a candidate:", ""]
        lines += [f"- `{m.label}` ({m.path.name})" for m in gate.missing]
    return "\n".join(lines) + "\n"


@app.command()
def report(
    baseline: Annotated[list[Path], typer.Option(help="Reference results (files or folders).")],
    candidate: Annotated[list[Path], typer.Option(help="Candidate results (files or folders).")],
    tolerance: Annotated[float, typer.Option(help="Allowed absolute drop of a metric (fraction, 0.02 = 2 points).")] = 0.02,
    level: Annotated[float, typer.Option(help=(
        "A drop beyond --tolerance is a regression only if a paired bootstrap over the runs' shared cases finds it "
        "real at this level (runs without shared cases: the tolerance alone)."))] = 0.95,
    resamples: Annotated[int, typer.Option(help="Resamples of the paired bootstrap.")] = 1000,
    out: Annotated[Optional[Path], typer.Option(help="Also write the report here.")] = None,
    format_: Annotated[ReportFormat, typer.Option("--format", help=(
        "markdown: the full report on stdout; github: the verdict and the regressions for a GitHub job summary, "
        "appended to $GITHUB_STEP_SUMMARY when it is set (else stdout)."))] = ReportFormat.markdown,
) -> None:
    """Regression gate: a markdown report (--format github: a GitHub job summary); exit status 1 if a reference run
    has no candidate or a metric gets worse beyond --tolerance and, where the runs share their cases, the paired
    bootstrap finds the drop real at --level."""
    import os

    from kebench.compare import expand_paths, load_result, markdown_report, regression_gate
    from kebench.io import atomic_write_text

    base = [load_result(p) for p in expand_paths(baseline)]
    cand = [load_result(p) for p in expand_paths(candidate)]
    gate = regression_gate(base, cand, tolerance, level=level, n_resamples=resamples)
    if format_ is ReportFormat.github:
        text = _github_summary(gate)
    else:
        text = markdown_report(gate.pairs, gate.regressions, gate.missing, tolerance, noise=gate.noise,
                               unpaired=gate.unpaired, level=gate.level, n_resamples=gate.n_resamples)
    if out:
        atomic_write_text(out, text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY") if format_ is ReportFormat.github else None
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"{'FAIL' if gate.failed else 'PASS'}: {len(gate.regressions)} regression(s), "
              f"{len(gate.missing)} reference run(s) without a candidate; report appended to $GITHUB_STEP_SUMMARY")
    else:
        print(text)
    if gate.failed:
        raise typer.Exit(1)


@app.command()
def plot(
    results: Annotated[list[Path], typer.Argument(help="Results files or folders of them.")],
    out: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("runs/plots"),
) -> None:
    """Scaling curves (metric vs edit count per editor; seconds per edit vs edit count) as PNG, and the
    retention curves of sequential runs made with --eval-at."""
    from kebench.compare import expand_paths, load_result
    from kebench.plot import plot_retention, plot_scaling

    summaries = [load_result(p) for p in expand_paths(results)]
    written = plot_scaling(summaries, out) + plot_retention(summaries, out)
    for path in written:
        console.print(f"wrote {escape(str(path))}", soft_wrap=True)


def _parse_layers(text: str) -> list[int]:
    """'4-8' or '4,5,6' -> [4, 5, ...]."""
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return list(range(int(lo), int(hi) + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise KebenchError(f"cannot read layers {text!r}; write e.g. 4-8 or 4,6,8") from None


@app.command()
def stats(
    layers: Annotated[Optional[str], typer.Option(help="Layers, e.g. 4-8 or 4,6,8 (default: the editor's layers).")] = None,
    editor: Annotated[str, typer.Option(help="Take the layers and token budget from this editor's defaults.")] = "memit",
    model: Annotated[Optional[str], typer.Option(help="Hub id, HF folder or .gguf (default: embedded model).")] = None,
    n_tokens: Annotated[Optional[int], typer.Option(help="Token budget over the WikiText corpus.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    list_cached: Annotated[bool, typer.Option("--list", help="List the cached statistics files and exit.")] = False,
) -> None:
    """Precompute (and cache) the MLP-key covariance statistics MEMIT and AlphaEdit need."""
    import time

    from kebench.editor import EDITORS
    from kebench.models.load import load_model
    from kebench.stats import iter_cached, layer_covariance

    if list_cached:
        for path in iter_cached():
            console.print(str(path))
        return
    hp = EDITORS.get(editor).default_hparams(model or "default")
    chosen = _parse_layers(layers) if layers else list(getattr(hp, "layers", ()))
    if not chosen:
        raise KebenchError(f"editor {editor!r} has no layers; pass --layers")
    budget = n_tokens or getattr(hp, "stats_n_tokens", None)
    lm = load_model(model, device=device)
    t0 = time.perf_counter()
    options = {"n_tokens": budget} if budget else {}
    for name in ("seq_len", "corpus"):  # the editor's own settings, so its cache lookups hit these files
        if getattr(hp, f"stats_{name}", None) is not None:
            options[name] = getattr(hp, f"stats_{name}")
    covs = layer_covariance(lm, chosen, **options)
    for layer, cov in covs.items():
        console.print(f"layer {layer}: covariance {tuple(cov.shape)} {cov.dtype}, trace {float(cov.trace()):.4g}")
    console.print(f"{time.perf_counter() - t0:.1f}s (cached files: `kebench stats --list`)")


cache_app = typer.Typer(
    no_args_is_help=True,
    help="Inspect kebench's caches (statistics, fitted values and neurons, checkpoints) and move them between machines.",
)
app.add_typer(cache_app, name="cache")


def _size(n: float) -> str:
    """Bytes as B / KB / MB / GB."""
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@cache_app.command("list")
def cache_list() -> None:
    """Each cache area (under $KEBENCH_CACHE, else ~/.cache/kebench) with its files and size."""
    from kebench.cache_transfer import list_areas
    from kebench.models.embedded import cache_root

    table = Table(title=f"kebench cache: {cache_root()}")
    for col in ("area", "files", "size"):
        table.add_column(col, justify="left" if col == "area" else "right")
    for area in list_areas():
        table.add_row(area.name, str(area.files), _size(area.bytes))
    console.print(table)


@cache_app.command("export")
def cache_export(
    out: Annotated[Path, typer.Argument(help="Archive to write (.tar, or .tar.gz to compress).")],
    area: Annotated[Optional[list[str]], typer.Option(
        help="An area to include, e.g. fits/target_values or stats (repeatable; default: every area but models).")] = None,
) -> None:
    """Pack cache areas into one archive, with a sha256 per file, to carry a long fit to another machine."""
    from kebench.cache_transfer import export_cache

    done = export_cache(out, area)
    console.print(f"wrote {out}: {done['files']} files, {_size(done['bytes'])}", soft_wrap=True)


@cache_app.command("import")
def cache_import(
    archive: Annotated[Path, typer.Argument(help="An archive `kebench cache export` wrote.")],
) -> None:
    """Unpack an exported archive into this machine's cache (existing files are kept; checksums verified)."""
    from kebench.cache_transfer import import_cache

    done = import_cache(archive)
    console.print(f"imported {archive}: {done['added']} files added, {done['kept']} already present", soft_wrap=True)


@app.command("list")
def list_() -> None:
    """Editors, datasets and models kebench knows."""
    from kebench.editor import EDITORS
    from kebench.models.adapter import ARCH_SPECS
    from kebench.suites import suite_names

    table = Table(title="kebench")
    table.add_column("kind")
    table.add_column("names")
    table.add_row("editors", ", ".join(EDITORS.names()))
    table.add_row("datasets", ", ".join(suite_names()))
    table.add_row("models", "default (SmolLM2-135M-Instruct, embedded); any hub id / HF folder / .gguf file")
    table.add_row("architectures", ", ".join(sorted(ARCH_SPECS)))
    console.print(table)


def _usage_error(exc: BaseException) -> tuple[str, int] | None:
    """(one-line message, exit code) for a command-line usage error, whichever click raised it.

    typer >= 0.22 vendors its own click (`typer._click`), older typer uses the `click` package: both
    raise exceptions that carry `format_message()` and `exit_code`, and only usage errors are caught here."""
    if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
        return None
    message = " ".join(str(exc.format_message()).split())
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "kebench"
    return f"{message} (see `{command} --help`)", int(exc.exit_code)


def main() -> None:
    """Console entry point: the command's exit status reaches the shell; user and usage errors are one line
    on stderr with exit status 2 (typer's standalone_mode=False *returns* exit codes instead of raising them)."""
    try:
        code = app(standalone_mode=False)
    except KebenchError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted; rerun with --resume to continue")
        sys.exit(130)
    except Exception as exc:
        usage = _usage_error(exc)
        if usage is None:
            raise
        err_console.print(f"[red]error:[/red] {escape(usage[0])}", highlight=False, soft_wrap=True)
        sys.exit(usage[1])
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
