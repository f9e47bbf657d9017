"""The results file: one run's configuration, identity, provenance, costs, metrics and per-case records.

`RunResult` is the file as typed frozen dataclasses. The runner builds one and writes `to_json()`;
`compare`, `report` and `plot` read files through `RunResult.from_json` (or `read_result`).

Versions: `schema_version` 1 files (before the identity block) and 2 (the runner's today) are read.
A version 2 file records the run's identity (`RunIdentity`: editor, model, suite, scale, mode, filter,
and the hyperparameters that differed from the editor's defaults *when it ran*); a version 1 file
gets it once, on reading, from `legacy_identity`, which compares its recorded hyperparameters with
today's defaults. A newer version than this kebench knows is a one-line error.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from kebench.config import canonical_key, flat_record, parse_override
from kebench.errors import ConfigError, KebenchError

SCHEMA_VERSION = 2
#: schema_version 1: no `identity` block (legacy_identity derives it on reading)
FIRST_VERSION = 1

# Hyperparameters that set only how many edits are fitted per forward/backward: every edit keeps its
# own optimiser state (kebench.optim.RowAdam), so they change rounding, not results. A run with one
# of them overridden is the same configuration (row and gate key) as the run without.
# (MeG's under their current and former names: job lines of either spelling name the same output file.)
THROUGHPUT_HPARAMS = frozenset({"v_edits_per_batch", "fitting.batch_size", "fit_batch_size"})
# Switches for caching and checkpointing: they decide what is recomputed, never what comes out.
OPERATIONAL_HPARAMS = frozenset({"v_cache", "update_checkpoint", "fitting.cache", "encoder.cache"})


class ResultsFormatError(ConfigError):
    """A JSON file that is not a results file this kebench can read: one line naming the file, where known,
    and the field (`reason`, e.g. "metrics.post is missing")."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        self.reason = reason
        super().__init__(f"{path} is not a kebench results file ({reason})" if path else f"not a kebench results file ({reason})")


# ----------------------------------------------------------------------------- reading JSON objects

_MISSING = object()
_KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "an object",
          list: "a list", type(None): "null"}
STR, INT, NUM, BOOL, OBJ, LIST = (str,), (int,), (int, float), (bool,), (dict,), (list,)


def _optional(kind: tuple[type, ...]) -> tuple[type, ...]:
    return (*kind, type(None))


def _kind_name(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


class _Fields:
    """One JSON object read field by field: each of the expected type, unknown keys refused, the field's
    path (e.g. `provenance.model.name`) in every error."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise ResultsFormatError(f"{where or 'the file'} is {_kind_name(obj)}, not an object")
        self.obj, self.where, self.seen = obj, where, set()

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def __call__(self, key: str, kind: tuple[type, ...], default: Any = _MISSING) -> Any:
        self.seen.add(key)
        if key not in self.obj:
            if default is _MISSING:
                raise ResultsFormatError(f"{self.path(key)} is missing")
            return default
        value = self.obj[key]
        if (isinstance(value, bool) and bool not in kind) or not isinstance(value, kind):
            expected = " or ".join(dict.fromkeys(_KINDS[k] for k in kind))
            raise ResultsFormatError(f"{self.path(key)} is {_kind_name(value)}, expected {expected}")
        return value

    def sub(self, key: str) -> "_Fields":
        return _Fields(self(key, OBJ), self.path(key))

    def done(self) -> None:
        unknown = [self.path(k) for k in self.obj if k not in self.seen]
        if unknown:
            raise ResultsFormatError(f"unknown field(s) {', '.join(unknown)}")


def _without_none(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`d` less those of `keys` whose value is None (fields a file has only when they apply)."""
    return {k: v for k, v in d.items() if not (k in keys and v is None)}


# ----------------------------------------------------------------------------- the blocks


@dataclass(frozen=True)
class RunInfo:
    """`run`: the RunConfig the run was made with (kebench.runner.RunConfig, field for field and in its
    order), the cases and distinct rewrites it edited, and the processes a sharded run used."""

    editor: str
    dataset: str
    scale: int | None
    model: str | None
    mode: str
    batch_size: int | None
    seed: int
    data_file: str | None
    data_format: str | None
    device: str
    dtype: str
    hparam_overrides: tuple[str, ...]
    eval_batch_size: int
    chunk_size: int
    load_edits: str | None
    device_map: str | None  # absent in the oldest files: None
    case_filter: str | None  # absent before --filter: None
    general: bool  # absent before general ability: whether the file has metrics.general
    eval_at: str | None  # absent before --eval-at: None
    lm_eval: str | None  # --lm-eval tasks; written only when given
    lm_eval_limit: int | None
    lm_eval_include: str | None
    hparams_file: str | None  # --hparams-file; written only when given
    n_cases: int
    n_requests: int
    processes: int | None = None  # written only for a sharded run (torchrun)

    @classmethod
    def from_config(cls, cfg: Any, n_cases: int, n_requests: int, processes: int | None = None) -> "RunInfo":
        """From a kebench.runner.RunConfig (its fields are this block's first ones)."""
        return cls(**dataclasses.asdict(cfg), n_cases=n_cases, n_requests=n_requests, processes=processes)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["hparam_overrides"] = list(self.hparam_overrides)
        return _without_none(d, "processes", "lm_eval", "lm_eval_limit", "lm_eval_include", "hparams_file")

    @classmethod
    def from_json(cls, f: _Fields, has_general: bool) -> "RunInfo":
        overrides = f("hparam_overrides", LIST)
        if not all(isinstance(o, str) for o in overrides):
            raise ResultsFormatError(f"{f.path('hparam_overrides')} must list key=value strings")
        run = cls(
            editor=f("editor", STR), dataset=f("dataset", STR), scale=f("scale", _optional(INT)),
            model=f("model", _optional(STR)), mode=f("mode", STR), batch_size=f("batch_size", _optional(INT)),
            seed=f("seed", INT), data_file=f("data_file", _optional(STR)), data_format=f("data_format", _optional(STR)),
            device=f("device", STR), dtype=f("dtype", STR), hparam_overrides=tuple(overrides),
            eval_batch_size=f("eval_batch_size", INT), chunk_size=f("chunk_size", INT),
            load_edits=f("load_edits", _optional(STR)), device_map=f("device_map", _optional(STR), None),
            case_filter=f("case_filter", _optional(STR), None), general=f("general", BOOL, has_general),
            eval_at=f("eval_at", _optional(STR), None), lm_eval=f("lm_eval", _optional(STR), None),
            lm_eval_limit=f("lm_eval_limit", _optional(INT), None), lm_eval_include=f("lm_eval_include", _optional(STR), None),
            hparams_file=f("hparams_file", _optional(STR), None),
            n_cases=f("n_cases", INT), n_requests=f("n_requests", INT),
            processes=f("processes", _optional(INT), None),
        )
        f.done()
        return run


@dataclass(frozen=True)
class RunIdentity:
    """`identity`: what makes runs comparable (a row of `kebench compare`, a key of `kebench report`).

    `overrides` are "key=value" for each hyperparameter that differed from the editor's defaults for
    the model when the run was made: its --hparam overrides as typed, less those equal to the default
    and those that set only throughput (THROUGHPUT_HPARAMS); see `run_identity`. `scale` is the number
    of cases run; `batch_size` is the cases per step of a sequential run (None in batch mode)."""

    editor: str
    model: str
    dataset: str
    scale: int
    mode: str
    batch_size: int | None
    case_filter: str | None
    overrides: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "overrides": list(self.overrides)}

    @classmethod
    def from_json(cls, f: _Fields) -> "RunIdentity":
        overrides = f("overrides", LIST)
        if not all(isinstance(o, str) for o in overrides):
            raise ResultsFormatError(f"{f.path('overrides')} must list key=value strings")
        identity = cls(
            editor=f("editor", STR), model=f("model", STR), dataset=f("dataset", STR), scale=f("scale", INT),
            mode=f("mode", STR), batch_size=f("batch_size", _optional(INT)), case_filter=f("case_filter", _optional(STR)),
            overrides=tuple(overrides),
        )
        f.done()
        return identity


@dataclass(frozen=True)
class ModelInfo:
    """`provenance.model`: the model as loaded."""

    name: str
    source: str
    model_type: str
    weights_sha256: str
    dtype: str

    @classmethod
    def from_json(cls, f: _Fields) -> "ModelInfo":
        info = cls(f("name", STR), f("source", STR), f("model_type", STR), f("weights_sha256", STR), f("dtype", STR))
        f.done()
        return info


@dataclass(frozen=True)
class Hardware:
    """`provenance.hardware`: where the run's times and memory were measured (`gpu` only on CUDA)."""

    platform: str
    processor: str
    cpu_count: int | None
    torch_threads: int
    device: str
    gpu: str | None = None

    @property
    def label(self) -> str:
        """"cpu", or the GPU's name (or the device, where a GPU run lacks the name)."""
        return self.gpu or ("cpu" if self.device.startswith("cpu") else self.device)

    def to_json(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), "gpu")

    @classmethod
    def from_json(cls, f: _Fields) -> "Hardware":
        hw = cls(f("platform", STR), f("processor", STR), f("cpu_count", _optional(INT)), f("torch_threads", INT),
                 f("device", STR), f("gpu", _optional(STR), None))
        f.done()
        return hw


@dataclass(frozen=True)
class Provenance:
    """`provenance`: what the numbers depend on. `data` is the suite's own record of its files
    (kebench.suites: files with sha256, cases available, notes); `git` is {commit, dirty} of the code
    that ran; `packages` the versions of kebench and its main dependencies."""

    model: ModelInfo
    data: dict[str, Any]
    git: dict[str, Any]
    packages: dict[str, str | None]
    hardware: Hardware
    started_at: str
    finished_at: str
    resumed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "model": dataclasses.asdict(self.model), "data": self.data, "git": self.git, "packages": self.packages,
            "hardware": self.hardware.to_json(), "started_at": self.started_at, "finished_at": self.finished_at,
            "resumed": self.resumed,
        }

    @classmethod
    def from_json(cls, f: _Fields) -> "Provenance":
        prov = cls(
            model=ModelInfo.from_json(f.sub("model")), data=f("data", OBJ), git=f("git", OBJ), packages=f("packages", OBJ),
            hardware=Hardware.from_json(f.sub("hardware")), started_at=f("started_at", STR),
            finished_at=f("finished_at", STR), resumed=f("resumed", BOOL),
        )
        f.done()
        return prov


@dataclass(frozen=True)
class Memory:
    """`memory`: peak resident memory of the process, and peak CUDA allocation on a GPU (MB)."""

    peak_rss_mb: float
    peak_cuda_mb: float | None = None

    @property
    def peak_mb(self) -> float | None:
        """A GPU run's peak is its GPU memory (what limits it there); a CPU run's, its resident set."""
        return self.peak_cuda_mb or self.peak_rss_mb

    def to_json(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), "peak_cuda_mb")

    @classmethod
    def from_json(cls, f: _Fields) -> "Memory":
        memory = cls(f("peak_rss_mb", NUM), f("peak_cuda_mb", _optional(NUM), None))
        f.done()
        return memory


@dataclass(frozen=True)
class EditStep:
    """One editing step in `editor_stats`: its distinct rewrites, its seconds, and the editor's own stats
    (fit cache use, collapse diagnostics: kebench.diagnostics). `step` is its index in the sequence (a step whose
    edits earlier steps all made has no entry; absent in files written before it was recorded)."""

    n_requests: int
    seconds: float
    stats: dict[str, Any]
    step: int | None = None

    @classmethod
    def from_json(cls, f: _Fields) -> "EditStep":
        step = cls(f("n_requests", INT), f("seconds", NUM), f("stats", OBJ), f("step", _optional(INT), None))
        f.done()
        return step

    def to_json(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), "step")


@dataclass(frozen=True)
class Metrics:
    """`metrics`: the suite's aggregates of the unedited (`pre`) and edited (`post`) model;
    `intervals`, bootstrap intervals over cases (kebench.metrics.uncertainty; absent in older files);
    `general`, general ability before and after editing (kebench.metrics.general; absent when not measured);
    `lm_eval`, lm-evaluation-harness results before and after editing (kebench.lm_eval_bridge; --lm-eval)."""

    pre: dict[str, Any]
    post: dict[str, Any]
    intervals: dict[str, Any] | None = None
    general: dict[str, Any] | None = None
    lm_eval: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), "intervals", "general", "lm_eval")

    @classmethod
    def from_json(cls, f: _Fields) -> "Metrics":
        metrics = cls(f("pre", OBJ), f("post", OBJ), f("intervals", _optional(OBJ), None), f("general", _optional(OBJ), None),
                      f("lm_eval", _optional(OBJ), None))
        f.done()
        return metrics


@dataclass(frozen=True)
class Selection:
    """`selection`: how `--filter` chose the run's cases (kebench.runner.select_cases)."""

    filter: str
    rule: str
    order: str
    considered: int
    kept: int
    case_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "case_ids": list(self.case_ids)}

    @classmethod
    def from_json(cls, f: _Fields) -> "Selection":
        selection = cls(f("filter", STR), f("rule", STR), f("order", STR), f("considered", INT), f("kept", INT),
                        tuple(f("case_ids", LIST)))
        f.done()
        return selection


@dataclass(frozen=True)
class RetentionPoint:
    """One evaluation point of a sequential run: every case edited so far, after `cases` cases."""

    cases: int
    edits: int
    metrics: dict[str, Any]
    general: dict[str, Any] | None = None  # the edited model's general ability there, where measured

    def to_json(self) -> dict[str, Any]:
        return _without_none(dataclasses.asdict(self), "general")

    @classmethod
    def from_json(cls, f: _Fields) -> "RetentionPoint":
        point = cls(f("cases", INT), f("edits", INT), f("metrics", OBJ), f("general", _optional(OBJ), None))
        f.done()
        return point


@dataclass(frozen=True)
class Retention:
    """`retention` (`--eval-at`): the points (the last is the final evaluation) and, with `immediate`, the
    metrics of each step's cases right after their own step."""

    eval_at: str
    points: tuple[RetentionPoint, ...]
    immediate: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_none(
            {"eval_at": self.eval_at, "points": [p.to_json() for p in self.points], "immediate": self.immediate},
            "immediate",
        )

    @classmethod
    def from_json(cls, f: _Fields) -> "Retention":
        points = f("points", LIST)
        retention = cls(
            f("eval_at", STR),
            tuple(RetentionPoint.from_json(_Fields(p, f"{f.path('points')}[{i}]")) for i, p in enumerate(points)),
            f("immediate", _optional(OBJ), None),
        )
        f.done()
        return retention


# ----------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class RunResult:
    """One results file. `cases` are the per-case records, {"case_id", "pre", "post"} (and "immediate"
    where --eval-at evaluated the case right after its step), each side the suite's own record."""

    kebench_version: str
    run: RunInfo
    identity: RunIdentity
    provenance: Provenance
    hparams: dict[str, Any]
    editor: str
    timings_s: dict[str, float]
    seconds_per_edit: float
    memory: Memory
    editor_stats: tuple[EditStep, ...]
    restore_bit_exact: bool
    metrics: Metrics
    cases: tuple[dict[str, Any], ...]
    retention: Retention | None = None
    selection: Selection | None = None

    def to_json(self) -> dict[str, Any]:
        """The file's JSON, in the order the runner has always written it, with `identity` after `run`."""
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kebench_version": self.kebench_version,
            "run": self.run.to_json(),
            "identity": self.identity.to_json(),
            "provenance": self.provenance.to_json(),
            "hparams": self.hparams,
            "editor": self.editor,
            "timings_s": self.timings_s,
            "seconds_per_edit": self.seconds_per_edit,
            "memory": self.memory.to_json(),
            "editor_stats": [s.to_json() for s in self.editor_stats],
            "restore_bit_exact": self.restore_bit_exact,
            "metrics": self.metrics.to_json(),
            "cases": list(self.cases),
        }
        if self.retention is not None:
            d["retention"] = self.retention.to_json()
        if self.selection is not None:
            d["selection"] = self.selection.to_json()
        return d

    @classmethod
    def from_json(cls, data: Any) -> "RunResult":
        """A results file's parsed JSON, any version this kebench reads; a ResultsFormatError (one line,
        naming the field) for anything else, a ConfigError for a version newer than this kebench's."""
        version = _version(data)
        f = _Fields(data, "")
        f("schema_version", INT)
        metrics = Metrics.from_json(f.sub("metrics"))
        run = RunInfo.from_json(f.sub("run"), has_general=metrics.general is not None)
        editor = f("editor", STR)
        hparams = f("hparams", OBJ)
        if version == FIRST_VERSION:
            identity = legacy_identity(editor, run, hparams)
        else:
            identity = RunIdentity.from_json(f.sub("identity"))
        stats = f("editor_stats", LIST)
        cases = f("cases", LIST)
        for i, case in enumerate(cases):
            if not (isinstance(case, dict) and {"case_id", "pre", "post"} <= case.keys()):
                raise ResultsFormatError(f"cases[{i}] is not a {{case_id, pre, post}} record")
        retention, selection = f("retention", _optional(OBJ), None), f("selection", _optional(OBJ), None)
        result = cls(
            kebench_version=f("kebench_version", STR),
            run=run,
            identity=identity,
            provenance=Provenance.from_json(f.sub("provenance")),
            hparams=hparams,
            editor=editor,
            timings_s=f("timings_s", OBJ),
            seconds_per_edit=f("seconds_per_edit", NUM),
            memory=Memory.from_json(f.sub("memory")),
            editor_stats=tuple(EditStep.from_json(_Fields(s, f"editor_stats[{i}]")) for i, s in enumerate(stats)),
            restore_bit_exact=f("restore_bit_exact", BOOL),
            metrics=metrics,
            cases=tuple(cases),
            retention=None if retention is None else Retention.from_json(_Fields(retention, "retention")),
            selection=None if selection is None else Selection.from_json(_Fields(selection, "selection")),
        )
        f.done()
        return result


def _version(data: Any) -> int:
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < FIRST_VERSION:
        raise ResultsFormatError("no schema_version")
    if version > SCHEMA_VERSION:
        from kebench import __version__

        raise ConfigError(
            f"results schema_version {version} is newer than this kebench ({__version__}) reads "
            f"(versions {FIRST_VERSION} to {SCHEMA_VERSION}); upgrade kebench to read it"
        )
    return version


def read_result(path: Path) -> RunResult:
    """The results file at `path`, through `RunResult.from_json`; errors are one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"results file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsFormatError(f"{type(exc).__name__}: {exc}", path) from None
    return from_json_at(path, data)


def from_json_at(path: Path, data: Any) -> RunResult:
    """`RunResult.from_json(data)` for the file at `path`: its errors name the file."""
    try:
        return RunResult.from_json(data)
    except ResultsFormatError as exc:
        raise ResultsFormatError(exc.reason, path) from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# ----------------------------------------------------------------------------- identity


def hparams_record(hparams: Any) -> dict[str, Any]:
    """A hyperparameter dataclass as a results file records it (tuples become lists)."""
    from kebench.io import _json_default  # the results writer's own conversions

    return flat_record(json.loads(json.dumps(dataclasses.asdict(hparams), default=_json_default)))


def run_identity(editor: str, run: RunInfo, hparams: dict[str, Any], defaults: dict[str, Any]) -> RunIdentity:
    """The identity of a run of `editor` whose recorded hyperparameters are `hparams`, against the editor's
    `defaults` for the run's model (both as a results file records them). Its overrides: the run's
    --hparam overrides as typed, less throughput knobs and those `defaults` equals, then "key=value" for
    each other recorded hyperparameter `defaults` does not match (none at run time: the run's
    hyperparameters are the defaults and its overrides; caching switches and keys the run predates
    are no difference)."""
    overridden = tuple(o for o in map(partial(_canonical_override, editor), run.hparam_overrides)
                       if _override_key(o) not in THROUGHPUT_HPARAMS)
    differing = tuple(o for o in overridden if not _equals_default(o, defaults))
    ignored = {_override_key(o) for o in overridden} | THROUGHPUT_HPARAMS | OPERATIONAL_HPARAMS
    drift = tuple(
        f"{key}={format_value(hparams[key])}"
        for key, default in defaults.items()
        if key in hparams and key not in ignored and hparams[key] != default
    )
    # settings from a file of the user's own are a configuration of their own, named by the file
    own = (f"hparams_file={Path(run.hparams_file).name}",) if run.hparams_file else ()
    return RunIdentity(
        editor=editor, model=run.model or "default", dataset=run.dataset, scale=run.n_cases, mode=run.mode,
        batch_size=run.batch_size if run.mode == "sequential" else None, case_filter=run.case_filter,
        overrides=own + differing + drift,
    )


def legacy_identity(editor: str, run: RunInfo, hparams: dict[str, Any]) -> RunIdentity:
    """The identity of a schema_version 1 file, which did not record one: `run_identity` against
    *today's* defaults of its editor for its model (an editor or config this install lacks: its
    overrides alone). A default changed since the run was made shows as `key=recorded value`."""
    hparams = {_canonical(editor, key): value for key, value in hparams.items()}
    return run_identity(editor, run, hparams, _current_defaults(editor, run.model or "default"))


def _canonical(editor: str, key: str) -> str:
    """`key` under its current name for `editor` (MeG's former flat names: `familiarity` -> `gate.kind`)."""
    from kebench.editor import EDITORS

    try:
        return canonical_key(EDITORS.get(editor).hparams_cls, key)
    except KebenchError:
        return key


def _canonical_override(editor: str, override: str) -> str:
    key, eq, value = override.partition("=")
    return f"{_canonical(editor, key.strip())}{eq}{value}"


@lru_cache(maxsize=None)
def _current_defaults(editor: str, model: str) -> dict[str, Any]:
    """Today's default hyperparameters as a results file records them; empty for an editor or config this
    install cannot give (unknown editor, a config file it rejects). Shared between calls: read only."""
    from kebench.editor import EDITORS

    try:
        return hparams_record(EDITORS.get(editor).default_hparams(model))
    except KebenchError:
        return {}


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def _equals_default(override: str, defaults: dict[str, Any]) -> bool:
    try:
        key, value = parse_override(override)
    except ConfigError:
        return False
    return key in defaults and json.loads(json.dumps(value)) == defaults[key]


def format_value(value: object) -> str:
    """A recorded hyperparameter value as an override would write it: 0.003, true, [4,5,6]."""
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)
