"""`kebench run --lm-eval TASKS`: lm-evaluation-harness on the model in memory, unedited and edited.

The edited model is handed to lm-eval as it is, with its edits still attached (no save and reload): a
`transformers` model wrapped in lm-eval's own `HFLM`. A query-dependent editor (MeG) acts through its
handle's conditioning, which kebench's metrics enter for each batch of prompts; here every batch lm-eval
runs (log-likelihood and generation alike) is decoded back to text, padding left out, and run inside the
same conditioning, so the editor sees the text lm-eval runs as its query (a log-likelihood request's context and
all but the last token of its continuation), the same whatever the batch it was run in.

lm-eval is an optional dependency (`pip install "kebench[lm-eval]"`). Its results are stored beside
kebench's in `metrics.lm_eval` ({"pre", "post", "protocol"}), per task as lm-eval reports them
("acc,none", "acc_stderr,none", ...). Tasks that need data from the Hugging Face hub need it cached or a
network; `--lm-eval-include DIR` adds task YAMLs of your own (e.g. over local JSON files).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kebench.errors import ConfigError, DataError
from kebench.models.loaded import LoadedModel

INSTALL_HINT = 'pip install "kebench[lm-eval]"'


def parse_tasks(text: str) -> list[str]:
    """'hellaswag,arc_easy' -> ['hellaswag', 'arc_easy'] (no empty names)."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("--lm-eval needs task names, e.g. --lm-eval arc_easy,hellaswag")
    return tasks


def _harness() -> Any:
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(f"--lm-eval needs the lm-evaluation-harness, which is not installed: {INSTALL_HINT}") from None
    return lm_eval


def harness_version() -> str:
    return _harness().__version__


@functools.lru_cache(maxsize=4)
def task_manager(include: str | None) -> Any:
    """lm-eval's task index (built once per process and folder: it reads every task YAML)."""
    from lm_eval.tasks import TaskManager

    if include is not None and not Path(include).is_dir():
        raise ConfigError(f"--lm-eval-include {include!r} is not a folder of task YAML files")
    return TaskManager(include_path=include, verbosity="ERROR")


def check_tasks(tasks: Sequence[str], include: str | None) -> None:
    """One-line error for a task lm-eval does not know (with the closest names), before anything runs."""
    _harness()
    known = set(task_manager(include).all_tasks)
    for task in tasks:
        if task not in known:
            close = difflib.get_close_matches(task, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"lm-eval has no task {task!r}{hint} (`lm-eval ls tasks` lists them; "
                              "--lm-eval-include DIR adds your own)")


def _edited_hflm(lm: LoadedModel, condition: Any, batch_size: int) -> Any:
    from lm_eval.models.huggingface import HFLM

    from kebench.scoring import _condition as conditioned  # the context kebench's own metrics run in

    class EditedHFLM(HFLM):
        """lm-eval's HF wrapper over the model in memory, each batch run inside the editor's conditioning."""

        row_lengths: list[int] | None = None  # the next log-likelihood batch's unpadded row lengths (_row_lengths)

        def _texts(self, ids: Any, lengths: list[int] | None = None) -> list[str]:
            rows = [row[:n] for row, n in zip(ids, lengths, strict=True)] if lengths is not None else list(ids)
            return lm.tokenizer.batch_decode(rows, skip_special_tokens=True)

        def _model_call(self, inps: Any, attn_mask: Any = None, labels: Any = None) -> Any:
            lengths, self.row_lengths = self.row_lengths, None
            if lengths is not None and len(lengths) != inps.shape[0]:
                raise RuntimeError(f"lm-eval built a batch of {len(lengths)} rows and called the model on "
                                   f"{inps.shape[0]}; this lm-eval version is not one the bridge supports (<0.5)")
            with conditioned(condition, self._texts(inps, lengths)):
                return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

        def _model_generate(self, context: Any, max_length: int, stop: list[str], **kwargs: Any) -> Any:
            # generation contexts are left padded with the tokenizer's pad token, a special token decoding skips
            with conditioned(condition, self._texts(context)):
                return super()._model_generate(context, max_length, stop, **kwargs)

    with contextlib.redirect_stdout(None):
        return EditedHFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size, device=str(lm.device))


@contextlib.contextmanager
def _row_lengths(model: Any) -> Iterator[None]:
    """Record each log-likelihood row's length as lm-eval pads the batch, for the query text to leave it out.

    lm-eval pads a causal model's log-likelihood rows on the right with token 0 (`pad_and_concat`) and passes no
    mask. Token 0 is a real token in many vocabularies (GPT-2's "!"), so decoding the padded rows would put
    padding into the query text an editor conditions on, and a row's result would depend on its batch."""
    import lm_eval.models.huggingface as hf

    original = hf.pad_and_concat

    def recording(max_length: int, tensors: list[Any], *args: Any, **kwargs: Any) -> Any:
        model.row_lengths = [int(t.shape[-1]) for t in tensors]
        return original(max_length, tensors, *args, **kwargs)

    hf.pad_and_concat = recording
    try:
        yield
    finally:
        hf.pad_and_concat = original


def evaluate(lm: LoadedModel, tasks: Sequence[str], condition: Any = None, *, limit: int | None = None,
             include: str | None = None, batch_size: int = 8, seed: int = 0) -> dict[str, Any]:
    """lm-eval's results for `tasks` on `lm` as it is now (inside `condition`, an editor's conditioning)."""
    harness = _harness()
    model = _edited_hflm(lm, condition, batch_size)
    try:
        with _row_lengths(model):
            out = harness.simple_evaluate(
                model=model, tasks=list(tasks), task_manager=task_manager(include), limit=limit, log_samples=False,
                random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                bootstrap_iters=0,
            )
    except (ConnectionError, FileNotFoundError, OSError) as exc:  # hub data absent offline, a missing data file
        raise DataError(f"lm-eval could not load the data of {', '.join(tasks)} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); run where the data is cached or reachable, or use "
                        "--lm-eval-include with local data") from None
    return {
        "results": out["results"],
        "n_samples": {task: n.get("effective") for task, n in (out.get("n-samples") or {}).items()},
        "versions": {k: v for k, v in (out.get("versions") or {}).items()},
    }


def protocol(tasks: Sequence[str], limit: int | None, include: str | None) -> dict[str, Any]:
    """What the lm-eval numbers are: the harness version, tasks, limit and where custom tasks came from."""
    return {"harness": "lm-evaluation-harness", "version": harness_version(), "tasks": list(tasks),
            "limit": limit, "include": include, "conditioning": "each batch decoded and run in the editor's conditioning"}


def headline(record: dict[str, Any]) -> dict[str, float]:
    """`task/metric` -> value for each task's plain metrics (no stderr, no aliases), for summaries."""
    out: dict[str, float] = {}
    for task, metrics in record["results"].items():
        for key, value in metrics.items():
            if "," in key and "stderr" not in key and isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{task}/{key.split(',')[0]}"] = float(value)
    return out
