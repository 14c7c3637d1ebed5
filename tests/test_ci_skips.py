"""With CI=true a skipped test fails the run (conftest.py): CI must have every browser and
service, so a missing one may not pass as a skip there. The suite's own checks for a missing
tool call `tests.support.missing`, which fails in CI by itself and skips elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

SKIPPING = '''
import pytest

from tests.support import missing

def test_needs_a_missing_tool():
    missing("no such tool here")

def test_needs_something_missing():
    pytest.skip("no such service here")

@pytest.mark.skipif(True, reason="no such browser here")
def test_marked():
    pass

@pytest.fixture
def service():
    pytest.importorskip("no_such_module_anywhere")

def test_by_fixture(service):
    pass
'''


def run(directory: Path, ci: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory)],
        cwd=directory, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_a_skip_is_a_failure_in_ci_and_a_skip_elsewhere(tmp_path: Path) -> None:
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    local = run(tmp_path, "")
    assert local.returncode == 0, local.stdout
    assert "4 skipped" in local.stdout
    ci = run(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout
    # a skip in the test's call fails it; one in its setup (a mark, a fixture) is an error
    assert "2 failed, 2 errors" in ci.stdout and "skipped" not in ci.stdout.splitlines()[-1]
    assert "skipped in CI, which must have everything" in ci.stdout
    assert "no such tool here; CI must have it" in ci.stdout  # missing() failed it itself
    for reason in ("no such service here", "no such browser here", "no_such_module_anywhere"):
        assert reason in ci.stdout
