"""The house rules' static checks (docs/DESIGN.md), run with the suite so CI holds them."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def check(*command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing() -> None:
    check("ruff", "check", "relay", "tests", "bench", "e2e")


def test_mypy_finds_nothing_in_the_package() -> None:
    check("mypy", "relay")
