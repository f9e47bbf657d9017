"""The `kebench` command line: run, compare, report, plot, stats, cache, list."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kebench.errors import KebenchError

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
    seed: Annotated[int, typer.Option(help="Seeds sampling, editors and evaluation.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Results JSON (default: runs/<editor>/<model>/<dataset>/...).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing results file / checkpoint.")] = False,
    data_file: Annotated[Optional[Path], typer.Option(help="Run the suite on your own file (any supported format).")] = None,
    data_format: Annotated[Optional[str], typer.Option(help="Force the data format instead of detecting it.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    device_map: Annotated[Optional[str], typer.Option(help="Spread a large model over several GPUs with accelerate: auto, balanced, sequential.")] = None,
    hparam: Annotated[Optional[list[str]], typer.Option(help="Override an editor hyperparameter: key=value (repeatable).")] = None,
    eval_batch_size: Annotated[int, typer.Option(help="Prompts per forward pass during evaluation.")] = 32,
    save_edits: Annotated[Optional[Path], typer.Option(help="Write the fitted edit to this folder.")] = None,
    load_edits: Annotated[Optional[Path], typer.Option(help="Evaluate an edit saved with --save-edits instead of fitting.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Edit a model with one editor on one suite and write a results JSON with full provenance.

    Under `torchrun --nproc_per_node N -m kebench run ...` the evaluation is sharded over N processes.
    """
    from kebench import progress
    from kebench.distributed import init_shard
    from kebench.runner import Run, RunConfig

    shard = init_shard(device)
    progress.set_enabled(not quiet and shard.is_main)
    if load_edits is not None and not load_edits.exists():
        raise KebenchError(f"--load-edits folder {load_edits} does not exist")
    cfg = RunConfig(
        editor=editor,
        dataset=dataset,
        scale=scale,
        model=model,
        mode=mode,
        batch_size=batch_size,
        seed=seed,
        data_file=str(data_file) if data_file else None,
        data_format=data_format,
        device=device,
        dtype=dtype,
        hparam_overrides=tuple(hparam or ()),
        eval_batch_size=eval_batch_size,
        load_edits=str(load_edits) if load_edits else None,
        device_map=device_map,
        case_filter=case_filter,
    )
    runner = Run(cfg, out, resume=resume, overwrite=overwrite, save_edits=save_edits, shard=shard)
    result = runner.execute()
    if not shard.is_main:
        return
    _print_summary(result)
    console.print(f"results: [bold]{runner.out}[/bold]")


def _print_summary(result: dict) -> None:
    from kebench.compare import metric_cell
    from kebench.suites import get_suite

    suite = get_suite(result["run"]["dataset"])
    table = Table(title=f"{result['editor']} on {result['run']['dataset']} ({result['run']['n_cases']} cases)")
    table.add_column("metric")
    table.add_column("unedited", justify="right")
    table.add_column("edited", justify="right")
    pre, post = result["metrics"]["pre"], result["metrics"]["post"]
    for name in suite.headline:
        if name in post:
            table.add_row(name, metric_cell(name, pre.get(name)), metric_cell(name, post[name]))
    console.print(table)
    t = result["timings_s"]
    console.print(
        "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()) + f"; {result['seconds_per_edit']:.3f} s/edit"
    )


@app.command()
def compare(
    results: Annotated[list[Path], typer.Argument(help="Results files or folders of them.")],
    markdown: Annotated[Optional[Path], typer.Option(help="Also write the tables (and scaling plots) as markdown here.")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Also write a self-contained HTML report with the scaling plots.")] = None,
    plots: Annotated[bool, typer.Option(help="Render scaling plots for the markdown/HTML report.")] = True,
) -> None:
    """Show several results side by side: one table per suite, a row per editor / scale / mode."""
    from kebench.compare import (
        CACHED_NOTE, comparison_tables, expand_paths, has_cached_fits, html_report, load_result, markdown_tables,
    )
    from kebench.io import atomic_write_text
    from kebench.plot import plot_scaling

    summaries = [load_result(p) for p in expand_paths(results)]
    tables = comparison_tables(summaries)
    if console.is_terminal:
        for dataset, header, rows in tables:
            # every cell escaped: rich would read a label's `[familiarity=similarity]` as markup and drop it
            table = Table(title=f"{dataset}: edited (unedited) and lift, rates in %")
            for c in header:
                table.add_column(escape(c), justify="left" if c in ("editor", "mode") else "right")
            for row in rows:
                table.add_row(*(escape(cell) for cell in row))
            if has_cached_fits(rows):
                table.caption = escape(CACHED_NOTE)
            console.print(table)
    else:  # piped (a CI log, a file): markdown tables, whole rows, never cut to the console's width
        print("Cells: edited (unedited) and the lift over the unedited model; rates in %.\n")
        print(markdown_tables(tables), end="", flush=True)
    for target, render in ((markdown, "markdown"), (html, "html")):
        if target is None:
            continue
        images = plot_scaling(summaries, target.parent / f"{target.stem}_plots") if plots else []
        text = markdown_tables(tables, images, target.parent) if render == "markdown" else html_report(tables, images)
        atomic_write_text(target, text)
        console.print(f"{render}: {escape(str(target))}", soft_wrap=True)


class ReportFormat(str, Enum):
    markdown = "markdown"
    github = "github"


def _github_summary(pairs: list, regressions: list, missing: list, tolerance: float) -> str:
    """The gate's verdict for a GitHub job summary: a heading, PASS/FAIL, and only what failed."""
    from kebench.compare import metric_cell

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    failed = bool(regressions or missing)
    lines = [
        "## kebench regression gate",
        "",
        f"{':x: **FAIL**' if failed else ':white_check_mark: **PASS**'}: {len(pairs)} run(s) compared with the reference, "
        f"{len(regressions)} regression(s) beyond the tolerance ({tolerance:g}), "
        f"{len(missing)} reference run(s) without a candidate.",
        "",
    ]
    if regressions:
        lines += ["| run | metric | reference | candidate | worse by |", "|---|---|---:|---:|---:|"]
        for r in regressions:
            lost = r.candidate != r.candidate  # NaN: the candidate did not report the metric
            lines.append(
                f"| {cell(r.label)} | {r.metric} | {metric_cell(r.metric, r.baseline)} | "
                f"{'missing' if lost else metric_cell(r.metric, r.candidate)} | {'–' if lost else metric_cell(r.metric, abs(r.delta))} |"
            )
        lines += ["", "Rates in % (changes in points), other metrics in their own unit; a drop is worse for a "
                  "higher-is-better metric, a rise for a lower-is-better one."]
    if missing:
        lines += ["", "Reference runs without a candidate:", ""]
        lines += [f"- `{m.label}` ({m.path.name})" for m in missing]
    return "\n".join(lines) + "\n"


@app.command()
def report(
    baseline: Annotated[list[Path], typer.Option(help="Reference results (files or folders).")],
    candidate: Annotated[list[Path], typer.Option(help="Candidate results (files or folders).")],
    tolerance: Annotated[float, typer.Option(help="Allowed absolute drop of a metric (fraction, 0.02 = 2 points).")] = 0.02,
    out: Annotated[Optional[Path], typer.Option(help="Also write the report here.")] = None,
    format_: Annotated[ReportFormat, typer.Option("--format", help=(
        "markdown: the full report on stdout; github: the verdict and the regressions for a GitHub job summary, "
        "appended to $GITHUB_STEP_SUMMARY when it is set (else stdout)."))] = ReportFormat.markdown,
) -> None:
    """Regression gate: a markdown report (--format github: a GitHub job summary); exit status 1 if any metric
    gets worse beyond --tolerance or a reference run has no candidate."""
    import os

    from kebench.compare import expand_paths, find_regressions, load_result, markdown_report
    from kebench.io import atomic_write_text

    base = [load_result(p) for p in expand_paths(baseline)]
    cand = [load_result(p) for p in expand_paths(candidate)]
    pairs, regressions, missing = find_regressions(base, cand, tolerance)
    if format_ is ReportFormat.github:
        text = _github_summary(pairs, regressions, missing, tolerance)
    else:
        text = markdown_report(pairs, regressions, missing, tolerance)
    if out:
        atomic_write_text(out, text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY") if format_ is ReportFormat.github else None
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"{'FAIL' if regressions or missing else 'PASS'}: {len(regressions)} regression(s), "
              f"{len(missing)} reference run(s) without a candidate; report appended to $GITHUB_STEP_SUMMARY")
    else:
        print(text)
    if regressions or missing:
        raise typer.Exit(1)


@app.command()
def plot(
    results: Annotated[list[Path], typer.Argument(help="Results files or folders of them.")],
    out: Annotated[Path, typer.Option(help="Folder for the PNG files.")] = Path("runs/plots"),
) -> None:
    """Scaling curves (metric vs edit count per editor; seconds per edit vs edit count) as PNG."""
    from kebench.compare import expand_paths, load_result
    from kebench.plot import plot_scaling

    for path in plot_scaling([load_result(p) for p in expand_paths(results)], out):
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
