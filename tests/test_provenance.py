"""Provenance: the checkout's commit and whether its code differs from it."""

import shutil
import subprocess

import pytest

from kebench.provenance import git_state

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def test_a_checkout_is_dirty_when_its_code_changes_not_its_results(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "editor.py").write_text("x = 1\n")
    (tmp_path / "results" / "run.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "start")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "results" / "run.json").write_text('{"score": 1}\n')  # a run re-measured in place: output
    (tmp_path / "new.py").write_text("y = 2\n")  # untracked: not part of the commit's code either way
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "editor.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
