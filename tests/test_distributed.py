"""Sharded evaluation: two CPU processes under torchrun give the single-process results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kebench.distributed import Shard, init_shard
from kebench.runner import Run

from .test_runner import _cfg, loader  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {repo!r})
    from kebench import progress
    from kebench.distributed import init_shard
    from kebench.models.loaded import LoadedModel, exact_checksum
    from kebench.runner import Run
    from transformers import AutoTokenizer
    from tests.conftest import TOKENIZER_DIR, make_tiny_llama
    from tests import test_runner

    progress.set_enabled(False)
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    model = make_tiny_llama()
    lm = LoadedModel(model, tok, "tiny-llama", exact_checksum(model), source="random")
    shard = init_shard("cpu")
    cfg = test_runner._cfg(mode="sequential", batch_size=2)
    result = Run(cfg, {out!r}, shard=shard, model_loader=lambda c: lm).execute()
    with open({out!r} + f".rank{{shard.rank}}", "w") as fh:
        json.dump({{"world": shard.world, "evaluated": sum(test_runner.CALLS), "cases": result["cases"]}}, fh)
''')


def test_shard_takes_every_worlds_item():
    items = list(range(7))
    assert Shard(0, 2).take(items) == [0, 2, 4, 6] and Shard(1, 2).take(items) == [1, 3, 5]
    assert Shard().take(items) == items and not Shard().active


def test_without_torchrun_there_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_shard() == Shard()


def test_world_size_without_torchrun_env_is_a_clear_error(monkeypatch):
    from kebench.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        init_shard()


def test_two_processes_evaluate_half_each_and_agree_with_one(tmp_path, loader):
    out = tmp_path / "sharded.json"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO), out=str(out)))
    env = {**os.environ, "KEBENCH_CACHE": str(tmp_path / "cache_sharded"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"sharded.json.rank{r}").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    # 4 cases x (reference-free pre + post): each rank evaluated half of them
    assert [r["evaluated"] for r in ranks] == [4, 4]
    written = json.loads(out.read_text())
    assert written["run"]["processes"] == 2
    assert not out.with_name(out.name + ".ckpt").exists()

    single = Run(_cfg(mode="sequential", batch_size=2), tmp_path / "single.json", model_loader=loader).execute()
    by_id = {c["case_id"]: c for c in written["cases"]}
    assert sorted(by_id) == sorted(c["case_id"] for c in single["cases"])
    for case in single["cases"]:
        for phase in ("pre", "post"):
            assert by_id[case["case_id"]][phase]["nll"] == pytest.approx(case[phase]["nll"], abs=1e-4)
    assert written["metrics"]["post"]["nll"] == pytest.approx(single["metrics"]["post"]["nll"], abs=1e-4)
    assert ranks[0]["cases"] == ranks[1]["cases"]  # every rank ends with all records
