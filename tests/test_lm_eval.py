"""The lm-evaluation-harness bridge (kebench.lm_eval_bridge, `kebench run --lm-eval`), offline: a task of our
own over a local JSON file, added with --lm-eval-include. Skipped, saying why, where lm-eval is not installed."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kebench.errors import ConfigError

lm_eval = pytest.importorskip("lm_eval", reason='lm-eval is not installed (pip install "kebench[lm-eval]")')

from kebench import lm_eval_bridge  # noqa: E402

DATA = Path(__file__).parent / "data" / "lm_eval" / "capitals.jsonl"


def _task(folder: Path, name: str, data: Path) -> Path:
    """A multiple-choice task YAML over a local JSON-lines file (no hub, no network)."""
    (folder / f"{name}.yaml").write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    """A folder holding one multiple-choice task over the local capitals file."""
    return _task(tmp_path_factory.mktemp("tasks"), "kebench_capitals", DATA)


def test_the_edited_model_runs_in_its_conditioning(tiny_lm, tasks):
    seen: list[str] = []

    @contextlib.contextmanager
    def condition(prompts):  # what a query-dependent editor's handle.conditioning is
        seen.extend(prompts)
        yield

    record = lm_eval_bridge.evaluate(tiny_lm, ["kebench_capitals"], condition, include=str(tasks), batch_size=4)
    assert record["n_samples"] == {"kebench_capitals": 4}
    assert 0.0 <= record["results"]["kebench_capitals"]["acc,none"] <= 1.0
    assert any("The capital of Spain is" in text for text in seen)  # every batch decoded into the conditioning
    assert set(lm_eval_bridge.headline(record)) == {"kebench_capitals/acc"}


def test_query_text_leaves_padding_out_whatever_the_batch(tiny_lm, tmp_path, monkeypatch):
    """lm-eval pads log-likelihood rows with token 0 and passes no mask; the query text must not carry it. Token 0
    is special in SmolLM2's vocabulary, so decoding here keeps special tokens: padding would show."""
    data = tmp_path / "lengths.jsonl"  # questions of different lengths: a batch of them is padded
    data.write_text("".join(json.dumps({"question": q, "choices": [" Paris", " Rome"], "answer": 0}) + "\n" for q in [
        "Paris is in", "The city where the Eiffel Tower stands is in", "Rome, the eternal city, is in",
        "The largest city on the Seine river, home of the Louvre, is in"]))
    folder = _task(tmp_path, "kebench_lengths", data)
    decode = tiny_lm.tokenizer.batch_decode
    monkeypatch.setattr(tiny_lm.tokenizer, "batch_decode",
                        lambda rows, skip_special_tokens=True: decode(rows, skip_special_tokens=False))

    def seen_at(batch_size: int) -> list[str]:
        seen: list[str] = []

        @contextlib.contextmanager
        def condition(prompts):
            seen.extend(prompts)
            yield

        lm_eval_bridge.evaluate(tiny_lm, ["kebench_lengths"], condition, include=str(folder), batch_size=batch_size)
        return seen

    alone, together = seen_at(1), seen_at(4)
    assert len(alone) >= 4  # one or more rows per question (lm-eval groups choices that share a context)
    assert not any(tiny_lm.tokenizer.decode([0]) in text for text in together)
    assert sorted(together) == sorted(alone)


def test_unknown_task_and_missing_harness_are_one_line(tasks, monkeypatch):
    with pytest.raises(ConfigError, match="no task 'kebench_capital'; did you mean kebench_capitals"):
        lm_eval_bridge.check_tasks(["kebench_capital"], str(tasks))
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'pip install "kebench\[lm-eval\]"'):
        lm_eval_bridge.check_tasks(["kebench_capitals"], str(tasks))


def test_kebench_run_stores_lm_eval_beside_its_metrics(tasks, tmp_path):
    """Through the installed script, on the default model: results before and after editing in metrics.lm_eval."""
    exe = shutil.which("kebench")
    assert exe, "the kebench console script is not installed"
    out = tmp_path / "run.json"
    base = [exe, "run", "--editor", "none", "--scale", "2", "--no-general", "--quiet",
            "--lm-eval-include", str(tasks)]
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # no hub, no network needed
    proc = subprocess.run([*base, "--lm-eval", "kebench_capitals", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=offline)
    assert proc.returncode == 0, proc.stderr[-2000:]
    block = json.loads(out.read_text())["metrics"]["lm_eval"]
    assert block["protocol"]["tasks"] == ["kebench_capitals"] and block["protocol"]["version"] == lm_eval.__version__
    assert block["pre"]["n_samples"] == {"kebench_capitals": 4}
    assert block["post"] == block["pre"]  # `none` leaves the model as it is
    assert "lm-eval kebench_capitals/acc" in proc.stdout
    bad = subprocess.run([*base, "--lm-eval", "no_such_task_xyz", "--out", str(tmp_path / "bad.json")],
                         capture_output=True, text=True, timeout=900)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "no task 'no_such_task_xyz'" in bad.stderr
