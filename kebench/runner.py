"""One benchmark run: load, record pre-edit predictions, edit (batch or sequential), evaluate, restore.

Every phase checkpoints into `<out>.ckpt/` so an interrupted run resumes where it stopped;
the runner never branches on which editor it drives.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from kebench import __version__, lm_eval_bridge
from kebench.config import parse_override, with_overrides
from kebench.data.case import EditCase, EditRequest, unique_requests
from kebench.data.loading import check_scale
from kebench.diagnostics import record_step
from kebench.distributed import Shard, local_device
from kebench.editor import EDITORS, EditHandle, Editor, StackedHandle
from kebench.errors import ConfigError, DataError
from kebench.metrics import general as general_ability
from kebench.io import append_jsonl, atomic_torch_save, atomic_write_json, read_jsonl
from kebench.models.loaded import LoadedModel, exact_checksum
from kebench.progress import progress_bar
from kebench.registry import Registry
from kebench.provenance import git_state, hardware, package_versions, peak_memory_mb
from kebench.suites import Suite, get_suite, post_metrics
from kebench.metrics.uncertainty import interval_record
from kebench.results import (
    EditStep, Hardware, Memory, Metrics, ModelInfo, Provenance, Retention, RetentionPoint, RunInfo, RunResult, Selection,
    hparams_record, run_identity,
)
from kebench.timing import Timer

_PACKAGE = Path(__file__).resolve().parent
#: The code the unedited model's records come from: data parsing and prompt templates, tokenisation,
#: scoring, the metrics and the suite definitions. The pre-edit cache is keyed by a hash of these.
EVALUATION_SOURCES: tuple[Path, ...] = tuple(
    _PACKAGE / name for name in ("data", "metrics", "scoring.py", "tokens.py", "suites.py")
)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (and so must match on --resume)."""

    editor: str
    dataset: str
    scale: int | None = None
    model: str | None = None
    mode: str = "batch"
    batch_size: int | None = None
    seed: int = 0
    data_file: str | None = None
    data_format: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    hparam_overrides: tuple[str, ...] = ()
    eval_batch_size: int = 32
    chunk_size: int = 64
    load_edits: str | None = None
    device_map: str | None = None
    case_filter: str | None = None  # --filter: run only the cases CASE_FILTERS.get(name) keeps (see select_cases)
    general: bool = True  # measure general ability (kebench.metrics.general) before and after editing
    eval_at: str | None = None  # sequential: "immediate" and/or case counts, e.g. "immediate,1000,2000" (EvalSchedule)
    lm_eval: str | None = None  # lm-evaluation-harness tasks run before and after editing, "arc_easy,hellaswag"
    lm_eval_limit: int | None = None  # documents per lm-eval task (lm-eval's --limit)
    lm_eval_include: str | None = None  # a folder of task YAMLs of one's own (lm-eval's --include_path)
    hparams_file: str | None = None  # the editor's settings from this YAML instead of its per-model file

    def validate(self) -> None:
        if self.mode not in ("batch", "sequential"):
            raise ConfigError(f"unknown mode {self.mode!r}; use --mode batch or --mode sequential")
        if self.mode == "sequential" and not self.batch_size:
            raise ConfigError("sequential mode needs --batch-size B (cases per editing step)")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.scale is not None and self.scale < 1:
            raise ConfigError(f"--scale must be >= 1, got {self.scale}")
        EDITORS.get(self.editor)  # unknown editor -> one-line error with a suggestion
        get_suite(self.dataset)
        if self.case_filter is not None:
            case_filter(self.case_filter).check_suite(self.dataset)
        if self.eval_at is not None:
            EvalSchedule.parse(self.eval_at).check(self)
        if self.lm_eval is not None:
            if self.lm_eval_limit is not None and self.lm_eval_limit < 1:
                raise ConfigError(f"--lm-eval-limit must be >= 1, got {self.lm_eval_limit}")
            lm_eval_bridge.check_tasks(lm_eval_bridge.parse_tasks(self.lm_eval), self.lm_eval_include)
        elif self.lm_eval_limit is not None or self.lm_eval_include is not None:
            raise ConfigError("--lm-eval-limit and --lm-eval-include need --lm-eval TASKS")

    def identity(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be resumed."""
        d = dataclasses.asdict(self)
        d.pop("chunk_size")
        d.pop("eval_batch_size")
        for optional in ("device_map", "case_filter", "eval_at", "lm_eval", "lm_eval_limit", "lm_eval_include", "hparams_file"):
            if d[optional] is None:
                d.pop(optional)  # checkpoints written before the option existed stay resumable
        if d["general"]:
            d.pop("general")
        return d


@dataclass(frozen=True)
class EvalSchedule:
    """When a sequential run evaluates besides the end (--eval-at): each step's own cases right after
    that step (`immediate`, as AlphaEdit's code does), and every case edited so far once `counts` cases
    have been edited (retention; the last point is the final evaluation every run makes)."""

    immediate: bool
    counts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> "EvalSchedule":
        parts = [p.strip() for p in text.split(",") if p.strip()]
        counts: list[int] = []
        for p in parts:
            if p == "immediate":
                continue
            if not p.isdigit() or int(p) < 1:
                raise ConfigError(f"--eval-at {text!r}: {p!r} is neither 'immediate' nor a positive case count; "
                                  "e.g. --eval-at immediate,500,1000")
            counts.append(int(p))
        if not parts:
            raise ConfigError("--eval-at is empty; e.g. --eval-at immediate,500,1000")
        return cls("immediate" in parts, tuple(sorted(set(counts))))

    def check(self, cfg: RunConfig) -> None:
        if cfg.mode != "sequential":
            raise ConfigError("--eval-at needs --mode sequential (a batch run has one step, evaluated at the end)")
        bad = [n for n in self.counts if n % cfg.batch_size or (cfg.scale is not None and n > cfg.scale)]
        if bad:
            raise ConfigError(
                f"--eval-at {bad[0]}: an evaluation point must be a multiple of --batch-size {cfg.batch_size}"
                + (f" and at most --scale {cfg.scale}" if cfg.scale is not None else "")
            )


def default_out_path(cfg: RunConfig) -> Path:
    model = (cfg.model or "default").strip("/").replace("/", "__")
    tag = f"{cfg.mode}" + (f"-b{cfg.batch_size}" if cfg.mode == "sequential" else "")
    kept = f"-{cfg.case_filter}" if cfg.case_filter else ""
    return Path("runs") / cfg.editor / model / cfg.dataset / f"n{cfg.scale or 'all'}{kept}-{tag}-s{cfg.seed}.json"


@dataclass(frozen=True)
class CaseFilter:
    """A --filter: keeps the cases whose unedited-model record passes `keep`, on the suites named."""

    name: str
    rule: str  # what a kept case is, as results files record it
    suites: tuple[str, ...]
    keep: Callable[[dict[str, Any]], bool]

    def check_suite(self, dataset: str) -> None:
        if dataset not in self.suites:
            raise ConfigError(
                f"--filter {self.name} needs the unedited model's rewrite scores, which only {', '.join(self.suites)} "
                f"record; {dataset!r} has none"
            )


def _knows_true_object(record: dict[str, Any]) -> bool:
    """The unedited model prefers the true object over the new one on every rewrite prompt: lower
    length-normalised NLL, the comparison efficacy_success makes (so its pre-edit efficacy is 0)."""
    try:
        pairs = record["nll"]["rewrite"]
    except (KeyError, TypeError):
        raise DataError(f"case {record.get('case_id')!r}: its unedited record has no rewrite NLLs to filter on") from None
    return bool(pairs) and all(true < new for new, true in pairs)


CASE_FILTERS: Registry[CaseFilter] = Registry("filter")
CASE_FILTERS.register("known", CaseFilter(
    "known",
    "the unedited model gives the true object a lower length-normalised NLL than the new one on the rewrite prompt",
    ("counterfact", "counterfact-rome", "counterfact-full"),
    _knows_true_object,
))


def case_filter(name: str) -> CaseFilter:
    """The --filter named `name` (an unknown name is a one-line error with a suggestion)."""
    return CASE_FILTERS.get(name)


def select_cases(
    cases: Sequence[EditCase], n: int | None, seed: int, flt: CaseFilter,
    unedited: Callable[[Sequence[EditCase]], dict[str, dict]],
) -> tuple[list[EditCase], Selection]:
    """The first `n` cases `flt` keeps (all of them when `n` is None), walking the cases in a seeded
    shuffle (random.Random(seed)); returned in file order, with what the results record about the choice.

    `unedited(cases)` gives their pre-edit records by case id (cached, so a case is scored once).
    Cases are scored in rounds sized by the kept fraction so far; which cases are kept, and
    "considered" (the walk up to the n-th kept case), do not depend on the round sizes."""
    suite = cases[0].suite if cases else "the suite"
    if n is not None:
        check_scale(cases, n)
    order = list(cases)
    random.Random(seed).shuffle(order)
    want = len(order) if n is None else n
    kept: list[EditCase] = []
    walked = considered = 0  # cases scored so far; cases up to and including the last kept one
    while len(kept) < want and walked < len(order):
        need = want - len(kept)
        rate = len(kept) / walked if walked else 1.0
        block = order[walked : walked + max(need, math.ceil(need / max(rate, 0.05)))]
        records = unedited(block)
        walked += len(block)
        for case in block:
            if len(kept) == want:
                break
            considered += 1
            if flt.keep(records[case.case_id]):
                kept.append(case)
    if n is None:
        considered = len(order)
    elif len(kept) < n:
        raise DataError(
            f"--filter {flt.name}: only {len(kept)} of the {len(order)} cases in {suite} pass; use --scale <= {len(kept)}"
        )
    position = {c.case_id: i for i, c in enumerate(cases)}
    kept.sort(key=lambda c: position[c.case_id])
    selection = Selection(
        filter=flt.name,
        rule=flt.rule,
        order=f"random.Random({seed}).shuffle of the {len(order)} cases; the first {len(kept)} kept, run in file order",
        considered=considered,
        kept=len(kept),
        case_ids=tuple(c.case_id for c in kept),
    )
    return kept, selection


def case_requests(cases: Sequence[EditCase]) -> list[EditRequest]:
    """The distinct rewrites of `cases`, each once, in case order."""
    return unique_requests(r for case in cases for r in case.requests)


class Run:
    """Drives one RunConfig to a results file. Construct, then call `execute()`."""

    def __init__(
        self,
        cfg: RunConfig,
        out: Path | None = None,
        *,
        resume: bool = False,
        overwrite: bool = False,
        save_edits: Path | None = None,
        model_loader: Callable[[RunConfig], LoadedModel] | None = None,
        shard: Shard | None = None,
    ) -> None:
        cfg.validate()
        self.shard = shard or Shard()
        if cfg.eval_at and self.shard.active:
            raise ConfigError("--eval-at is not supported with several processes yet; run it in one process")
        self.cfg = cfg
        self.out = Path(out) if out else default_out_path(cfg)
        self.ckpt = self.out.with_name(self.out.name + ".ckpt")
        self.save_edits = save_edits
        self.timer = Timer()
        self.model_loader = model_loader or _load_model_for
        self._prepare_checkpoint(resume, overwrite)

    # checkpoint bookkeeping -------------------------------------------------
    def _prepare_checkpoint(self, resume: bool, overwrite: bool) -> None:
        """Check (every rank) that the run may start or resume, then (rank 0) set up its checkpoint."""
        state_file = self.ckpt / "config.json"
        self.resumed = False
        self.shard.barrier()
        if overwrite and self.ckpt.exists():
            self.shard.barrier()  # every rank has looked before rank 0 deletes
            if self.shard.is_main:
                shutil.rmtree(self.ckpt)
            self.shard.barrier()
        has_progress = self.ckpt.exists() and any(p.name != "config.json" for p in self.ckpt.iterdir())
        if has_progress and state_file.exists():
            if not resume:
                raise ConfigError(
                    f"an interrupted run exists at {self.ckpt}; pass --resume to continue it or --overwrite to start over"
                )
            saved = json.loads(state_file.read_text())
            if saved != json.loads(json.dumps(self.cfg.identity())):
                diff = sorted(k for k in saved if saved.get(k) != self.cfg.identity().get(k))
                raise ConfigError(f"cannot resume {self.ckpt}: settings differ ({', '.join(diff)}); use --overwrite")
            self.resumed = True
        elif self.out.exists() and not overwrite and not resume:
            raise ConfigError(f"{self.out} exists; pass --overwrite to replace it or --out to write elsewhere")
        self.shard.barrier()
        if self.shard.is_main:
            self.ckpt.mkdir(parents=True, exist_ok=True)
            atomic_write_json(state_file, self.cfg.identity())
        self.shard.barrier()

    # phases ----------------------------------------------------------------
    def _records(
        self,
        name: str,
        cases: Sequence[EditCase],
        fn: Callable[[Sequence[EditCase]], list[dict]],
        label: str,
        path: Path | None = None,
    ) -> dict[str, dict]:
        """Per-case records for `fn`, computed chunk by chunk and appended to `path` (default `<ckpt>/<name>.jsonl`).

        Sharded, each rank evaluates every world-th pending case into `<name>.rank<r>.jsonl` beside it."""
        path = path or self.ckpt / f"{name}.jsonl"
        shard = self.shard
        shard.barrier()  # all ranks see the same finished records, so they split the same pending list,
        done = _read_records(path)
        todo = shard.take([c for c in cases if c.case_id not in done])
        shard.barrier()  # ... and none writes before all have read
        out = path.with_name(f"{path.stem}.rank{shard.rank}.jsonl") if shard.active else path
        t0 = time.perf_counter()
        with progress_bar(label, len(todo)) as bar:
            for start in range(0, len(todo), self.cfg.chunk_size):
                chunk = todo[start : start + self.cfg.chunk_size]
                rows = fn(chunk)
                if len(rows) != len(chunk):
                    raise RuntimeError(f"{label}: {len(rows)} records for {len(chunk)} cases")
                append_jsonl(out, rows)
                done.update({r["case_id"]: r for r in rows})
                bar.advance(len(chunk))
        self.timer.add(name, time.perf_counter() - t0)
        if shard.active:
            shard.barrier()
            done = _read_records(path)
        missing = [c.case_id for c in cases if c.case_id not in done]
        if missing:
            raise RuntimeError(f"{label}: no record for cases {missing[:5]}")
        return done

    def _retention(
        self, schedule: EvalSchedule, suite: Suite, cases: Sequence[EditCase], pre: dict[str, dict],
        post: dict[str, dict], immediate: dict[str, dict], general_pre: dict[str, Any] | None,
        general: dict[str, Any] | None,
    ) -> Retention:
        """The results' retention block: metrics of each step's cases right after their step, and of all
        the cases edited so far at each evaluation point (the last point is the final evaluation)."""
        def metrics(records: dict[str, dict], cs: Sequence[EditCase]) -> dict[str, float]:
            return post_metrics(suite, [pre[c.case_id] for c in cs], [records[c.case_id] for c in cs])

        points: list[RetentionPoint] = []
        for n in [*(n for n in schedule.counts if n < len(cases)), len(cases)]:
            so_far = cases[:n]
            requests = case_requests(so_far)
            final = n == len(cases)
            point_general = None
            if general_pre is not None:
                point_general = (
                    general["post"] if final and general is not None
                    else general_ability.summarise(
                        general_pre, json.loads((self.ckpt / f"general_at_{n:07d}.json").read_text()),
                        [r.subject for r in requests],
                    )["post"]
                )
            points.append(RetentionPoint(
                cases=n, edits=len(requests),
                metrics=metrics(post if final else _read_records(self.ckpt / f"at_{n:07d}.jsonl"), so_far),
                general=point_general,
            ))
        return Retention(eval_at=self.cfg.eval_at, points=tuple(points),
                         immediate=metrics(immediate, cases) if schedule.immediate else None)

    def _lm_eval_key(self) -> str:
        """What the unedited model's lm-eval results depend on besides the model (the pre-edit folder's key)."""
        import hashlib

        cfg = self.cfg
        key = [cfg.lm_eval, cfg.lm_eval_limit, cfg.lm_eval_include, cfg.seed, lm_eval_bridge.harness_version()]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

    def _measured(self, path: Path, label: str, timing: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The record at `path`, or `measure()`d (timed under `timing`, with a progress line) and written there."""
        if path.exists():
            return json.loads(path.read_text())
        t0 = time.perf_counter()
        with progress_bar(label, 1) as bar:
            record = measure()
            bar.advance()
        self.timer.add(timing, time.perf_counter() - t0)
        if self.shard.is_main:
            atomic_write_json(path, record)
        return record

    def _lm_eval(self, path: Path, lm: LoadedModel, condition: Any) -> dict[str, Any]:
        """The lm-eval record at `path`, run (and written) if it is not there yet."""
        cfg = self.cfg
        return self._measured(path, f"lm-eval ({cfg.lm_eval})", "lm_eval", lambda: lm_eval_bridge.evaluate(
            lm, lm_eval_bridge.parse_tasks(cfg.lm_eval), condition, limit=cfg.lm_eval_limit,
            include=cfg.lm_eval_include, batch_size=cfg.eval_batch_size, seed=cfg.seed))

    def _general(self, path: Path, lm: LoadedModel, condition: Any) -> dict[str, Any]:
        """The general-ability record at `path`, measured (and written) if it is not there yet."""
        return self._measured(path, "general ability (perplexity, known facts, fluency)", "general",
                              lambda: general_ability.measure(lm, condition=condition, batch_size=self.cfg.eval_batch_size))

    @staticmethod
    def _edited(stack: StackedHandle) -> EditHandle:
        """The run's edit: the one handle a batch (or a sequence it covers) leaves, else the stack of steps."""
        if not stack.handles:
            raise DataError("no edit was made: the cases ask for no rewrite (check the data file's requests)")
        return stack if len(stack.handles) > 1 else stack.handles[0]

    def _edit(
        self, lm: LoadedModel, editor: Editor, cases: Sequence[EditCase],
        after_step: Callable[[int, list[EditCase], list[EditCase], EditHandle], None] | None = None,
    ) -> EditHandle:
        """Apply the edit (one step, or one per --batch-size cases), checkpointing each step.

        `after_step(k, step_cases, cases_so_far, handle_so_far)` runs after every step, resumed ones too."""
        cfg = self.cfg
        edit_dir = self.ckpt / "edits"
        if cfg.load_edits:
            t0 = time.perf_counter()
            handle = editor.load_edits(lm, Path(cfg.load_edits))
            self.timer.add("edit", time.perf_counter() - t0)
            return handle
        if cfg.mode == "batch":
            steps = [list(cases)]
        else:
            steps = [list(cases[i : i + cfg.batch_size]) for i in range(0, len(cases), cfg.batch_size)]
        stack = StackedHandle()
        applied: set[tuple[str, str, str]] = set()
        between = 0.0  # seconds spent evaluating between steps: not editing time
        unedited_cond: dict[str, float | None] = {}  # condition numbers of the unedited matrices (diagnostics)

        def evaluate_between(k: int, step_cases: list[EditCase]) -> None:
            nonlocal between
            if after_step is not None:
                t = time.perf_counter()
                after_step(k, step_cases, [c for s in steps[: k + 1] for c in s], stack)
                between += time.perf_counter() - t

        t0 = time.perf_counter()
        if not self.shard.is_main:
            self.shard.barrier()  # rank 0 edits and checkpoints every step; this rank loads them
            for k in range(len(steps)):
                step_dir = edit_dir / f"step_{k:05d}"
                if step_dir.exists():  # a step whose edits were all made before writes nothing
                    stack.push(editor.load_edits(lm, step_dir))
            self.timer.add("edit", time.perf_counter() - t0)
            return self._edited(stack)
        editor.prepare(lm)  # before any step is applied or loaded back: the model is still unedited
        editor.plan(case_requests(cases))
        with progress_bar(f"editing ({editor.name}, {len(steps)} step{'s' * (len(steps) > 1)})", len(steps)) as bar:
            for k, step_cases in enumerate(steps):
                step_dir = edit_dir / f"step_{k:05d}"
                requests = [r for r in case_requests(step_cases) if r.key not in applied]
                applied.update(r.key for r in requests)
                if not requests:
                    # every edit of this step's cases was made by an earlier step (MQuAKE's cases share edits):
                    # nothing to apply, but its cases are still evaluated where --eval-at asks
                    evaluate_between(k, step_cases)
                    bar.advance()
                    continue
                if (step_dir / "done.json").exists():
                    # a step finished before a resume: its recorded editing time still counts toward s/edit
                    self.timer.add("edit_resumed", float(json.loads((step_dir / "done.json").read_text())["seconds"]))
                    stack.push(editor.load_edits(lm, step_dir))
                    editor_state = step_dir / "editor_state.pt"
                    if editor_state.exists():
                        editor.load_state_dict(torch.load(editor_state, weights_only=False))
                    evaluate_between(k, step_cases)
                    bar.advance()
                    continue
                set_seed(cfg.seed + k)
                ts = time.perf_counter()
                handle = editor.apply(lm, requests)
                # collapse diagnostics of weight edits (norm growth, condition number; NaN/Inf undoes the step and stops)
                record_step(handle, stack.handles, f"{editor.name} step {k}", unedited_cond)
                stack.push(handle)
                # checkpoint this step: the edit itself, the editor's cross-step state, its stats
                editor.save_edits(handle, step_dir)
                # the editor's cross-step state serves only the steps after this one (AlphaEdit's
                # state_dict reads the batch's keys: work a batch-mode run would otherwise pay for)
                state = editor.state_dict() if k + 1 < len(steps) else {}
                if state:
                    atomic_torch_save(step_dir / "editor_state.pt", state)
                atomic_write_json(
                    step_dir / "done.json",
                    {"step": k, "n_requests": len(requests), "seconds": time.perf_counter() - ts, "stats": handle.stats},
                )
                # an editor's state holds everything so far (AlphaEdit's keys, MeG's edits): only the newest is read
                for earlier in edit_dir.glob("step_*/editor_state.pt"):
                    if earlier.parent != step_dir:
                        earlier.unlink()
                evaluate_between(k, step_cases)
                bar.advance()
        self.timer.add("edit", time.perf_counter() - t0 - between)
        self.shard.barrier()
        return self._edited(stack)

    def execute(self) -> dict[str, Any]:
        """Run every phase and write the results file; returns its JSON (kebench.results.RunResult.to_json())."""
        cfg = self.cfg
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        code = git_state()  # the code this process runs: taken now, since the checkout may move on during a long run
        t_all = time.perf_counter()
        set_seed(cfg.seed)

        t0 = time.perf_counter()
        suite: Suite = get_suite(cfg.dataset)
        data = suite.load(cfg.data_file, cfg.data_format)
        # --filter chooses from the unedited model's records, so its cases are picked once the model is loaded
        cases = data.cases if cfg.case_filter else suite.sample(data.cases, cfg.scale, cfg.seed)
        self.timer.add("load_data", time.perf_counter() - t0)

        editor_cls = EDITORS.get(cfg.editor)
        model_name = cfg.model or "default"
        # defaults may follow the suite (MeG: its training pool)
        # settings_file only where given: a plugin's default_hparams written before --hparams-file need not take it
        hparams = (editor_cls.default_hparams(model_name, suite, settings_file=cfg.hparams_file) if cfg.hparams_file
                   else editor_cls.default_hparams(model_name, suite))
        defaults = hparams  # the editor's defaults at run time: the reference of the run's recorded identity
        if cfg.hparam_overrides:
            hparams = with_overrides(hparams, dict(parse_override(o) for o in cfg.hparam_overrides))
        editor = editor_cls(hparams)

        t0 = time.perf_counter()
        lm = self.model_loader(cfg)
        self.timer.add("load_model", time.perf_counter() - t0)

        ebs = cfg.eval_batch_size
        # The unedited model's records depend only on model, data and evaluation settings, so every
        # editor run on the same cases shares them (cached; a per-case JSONL, so partial work counts too).
        pre_dir = pre_edit_cache_dir(lm, cfg, data.files)

        def unedited(cs: Sequence[EditCase]) -> tuple[dict[str, dict], dict[str, dict]]:
            refs = self._records(
                "reference", cs, lambda ch: suite.references(lm, ch, batch_size=ebs), "pre-edit predictions",
                pre_dir / "reference.jsonl",
            )
            pre = self._records(
                "pre", cs, lambda ch: suite.evaluate(lm, ch, [refs[c.case_id] for c in ch], None, batch_size=ebs),
                "pre-edit evaluation", pre_dir / "pre.jsonl",
            )
            return refs, pre

        selection = None
        if cfg.case_filter:
            cases, selection = select_cases(
                cases, cfg.scale, cfg.seed, case_filter(cfg.case_filter), lambda cs: unedited(cs)[1]
            )
        refs, pre = unedited(cases)

        general_pre = self._general(pre_dir / "general.json", lm, None) if cfg.general else None
        # lm-eval on the unedited model first: a task whose data cannot be loaded stops the run before any editing
        lm_eval_pre = self._lm_eval(pre_dir / f"lm_eval_{self._lm_eval_key()}.json", lm, None) if cfg.lm_eval else None
        schedule = EvalSchedule.parse(cfg.eval_at) if cfg.eval_at else None

        def evaluate_so_far(k: int, step_cases: list[EditCase], so_far: list[EditCase], edited: EditHandle) -> None:
            """--eval-at: this step's cases right after it, and every case so far at the chosen counts."""
            def evaluate(ch: Sequence[EditCase]) -> list[dict]:
                return suite.evaluate(lm, ch, [refs[c.case_id] for c in ch], edited.conditioning, batch_size=ebs)

            if schedule.immediate:
                self._records("retention", step_cases, evaluate, f"evaluation of step {k + 1}'s cases",
                              self.ckpt / "immediate.jsonl")
            n = len(so_far)
            if n in schedule.counts and n < len(cases):  # the last point is the final evaluation
                self._records("retention", so_far, evaluate, f"evaluation after {n} cases",
                              self.ckpt / f"at_{n:07d}.jsonl")
                if general_pre is not None:
                    self._general(self.ckpt / f"general_at_{n:07d}.json", lm, edited.conditioning)

        original = exact_checksum(lm.model)
        handle = self._edit(lm, editor, cases, evaluate_so_far if schedule else None)
        if self.save_edits and self.shard.is_main:
            editor.save_edits(handle, self.save_edits)
        if editor.changes_nothing:
            post = pre  # the same model on the same cases: evaluating it again would only repeat `pre`
        else:
            post = self._records(
                "post",
                cases,
                lambda ch: suite.evaluate(lm, ch, [refs[c.case_id] for c in ch], handle.conditioning, batch_size=ebs),
                "post-edit evaluation",
            )
        general = None
        if general_pre is not None:
            general_post = (
                general_pre if editor.changes_nothing
                else self._general(self.ckpt / "general_post.json", lm, handle.conditioning)
            )
            general = {
                **general_ability.summarise(general_pre, general_post, [r.subject for r in case_requests(cases)]),
                "protocol": general_ability.protocol(lm.tokenizer),
            }

        lm_eval = None
        if lm_eval_pre is not None:
            lm_eval_post = (lm_eval_pre if editor.changes_nothing
                            else self._lm_eval(self.ckpt / "lm_eval_post.json", lm, handle.conditioning))
            lm_eval = {"pre": lm_eval_pre, "post": lm_eval_post, "protocol": lm_eval_bridge.protocol(
                lm_eval_bridge.parse_tasks(cfg.lm_eval), cfg.lm_eval_limit, cfg.lm_eval_include)}

        t0 = time.perf_counter()
        handle.restore()
        restored = exact_checksum(lm.model) == original
        self.timer.add("restore", time.perf_counter() - t0)
        if not restored:
            raise RuntimeError("restore() did not bring back the original weights bit-exact")

        self.timer.add("total", time.perf_counter() - t_all)
        requests = case_requests(cases)
        records = [
            {"case_id": c.case_id, "pre": pre[c.case_id], "post": post[c.case_id]} for c in cases
        ]
        immediate = _read_records(self.ckpt / "immediate.jsonl") if schedule is not None else {}
        if immediate:
            for record in records:
                if record["case_id"] in immediate:
                    record["immediate"] = immediate[record["case_id"]]
        run = RunInfo.from_config(cfg, n_cases=len(cases), n_requests=len(requests),
                                  processes=self.shard.world if self.shard.active else None)
        recorded = hparams_record(hparams)
        result = RunResult(
            kebench_version=__version__,
            run=run,
            identity=run_identity(editor.name, run, recorded, hparams_record(defaults)),
            provenance=Provenance(
                model=ModelInfo(
                    name=lm.name, source=lm.source, model_type=lm.adapter.model_type,
                    weights_sha256=lm.weights_sha256, dtype=str(lm.dtype),
                ),
                data=data.provenance(),
                git=code,
                packages=package_versions(),
                hardware=Hardware(**hardware(lm.device)),
                started_at=started,
                finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                resumed=self.resumed,
            ),
            hparams=recorded,
            editor=editor.name,
            timings_s=self.timer.timings,
            seconds_per_edit=(self.timer.timings.get("edit", 0.0) + self.timer.timings.get("edit_resumed", 0.0))
            / max(1, len(requests)),
            memory=Memory(**peak_memory_mb(lm.device)),
            editor_stats=tuple(EditStep(**step) for step in _edit_stats(self.ckpt)),
            restore_bit_exact=restored,
            metrics=Metrics(
                pre=suite.aggregate([pre[c.case_id] for c in cases]),
                post=post_metrics(suite, [pre[c.case_id] for c in cases], [post[c.case_id] for c in cases]),
                # bootstrap intervals over cases (kebench.metrics.uncertainty): level, n_resamples, [lo, hi] per metric
                intervals=interval_record(suite, [pre[c.case_id] for c in cases], [post[c.case_id] for c in cases]),
                general=general,
                lm_eval=lm_eval,
            ),
            cases=tuple(records),
            retention=self._retention(schedule, suite, cases, pre, post, immediate, general_pre, general) if schedule else None,
            selection=selection,
        )
        saved = result.to_json()
        self.shard.barrier()
        if self.shard.is_main:
            atomic_write_json(self.out, saved)
            shutil.rmtree(self.ckpt, ignore_errors=True)
        return saved


def _read_records(path: Path) -> dict[str, dict]:
    """Records by case id from `path` and the per-rank files a sharded run wrote beside it."""
    done: dict[str, dict] = {}
    for part in [path, *sorted(path.parent.glob(f"{path.stem}.rank*.jsonl"))]:
        done.update({r["case_id"]: r for r in read_jsonl(part)})
    return done


def pre_edit_cache_dir(lm: LoadedModel, cfg: RunConfig, files: list[dict[str, Any]]) -> Path:
    """Cache folder for unedited-model records, keyed by everything they depend on."""
    import hashlib

    from kebench.metrics.zsre import prompt_format
    from kebench.models.embedded import cache_root

    key = {
        "kebench": __version__,
        "evaluation_code": evaluation_code_sha256(),
        "model": lm.weights_sha256,
        "tokenizer": _tokenizer_sha256(lm.tokenizer),
        "dtype": str(lm.dtype),
        "device": lm.device.type,
        "dataset": cfg.dataset,
        "data": [f["sha256"] for f in files],
        "eval_batch_size": cfg.eval_batch_size,
        "zsre_prompt_format": prompt_format(lm.tokenizer),  # KEBENCH_ZSRE_CHAT_TEMPLATE: the generation prompts
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "pre_edit" / cfg.dataset / digest
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / "key.json", key)
    return path


def evaluation_code_sha256() -> str:
    """sha256 over the Python files of EVALUATION_SOURCES (folders searched recursively), by path and content."""
    import hashlib

    h = hashlib.sha256()
    for source in EVALUATION_SOURCES:
        for f in sorted(source.rglob("*.py")) if source.is_dir() else [source]:
            h.update(f"{f.relative_to(source.parent).as_posix()}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _tokenizer_sha256(tokenizer: Any) -> str:
    """A fast tokenizer's full definition (vocabulary, merges, normaliser, special tokens), else its vocabulary."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(spec.encode()).hexdigest()


def _edit_stats(ckpt: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((ckpt / "edits").glob("step_*/done.json"))]


def _load_model_for(cfg: RunConfig) -> LoadedModel:
    from kebench.models.load import load_model

    return load_model(cfg.model, device=local_device(cfg.device), dtype=cfg.dtype, device_map=cfg.device_map)
