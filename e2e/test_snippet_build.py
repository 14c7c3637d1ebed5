"""The committed static/comet.min.js: built from the current source, within budget, parses and
runs in Chromium, and is what the relay serves (so the other e2e tests exercise it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.snippet_size import BUDGET, measure
from e2e.conftest import Browsing, Stack

STATIC = Path(__file__).resolve().parent.parent / "static"


def test_the_min_file_is_built_from_the_current_source() -> None:
    first_line = (STATIC / "comet.min.js").read_text().splitlines()[0]
    source_hash = hashlib.sha256((STATIC / "comet.js").read_bytes()).hexdigest()[:16]
    assert first_line == f"// comet.js sha256:{source_hash}", "run scripts/build-snippet"


def test_the_min_file_is_within_budget() -> None:
    assert measure()["gzip"] <= BUDGET


def test_the_min_file_runs_without_a_tag_and_throws_nothing(
    browsing: Callable[..., Browsing],
) -> None:
    b = browsing()
    b.page.set_content("<p>no tag: the snippet finds no data-key and stays inert</p>")
    b.page.add_script_tag(content=(STATIC / "comet.min.js").read_text())
    b.page.add_script_tag(content=(STATIC / "comet.min.js").read_text())  # twice
    assert b.errors == []


def test_the_relay_serves_the_min_file(stack: Stack) -> None:
    answer = httpx.get(f"{stack.relay.url}/comet.js")
    assert answer.status_code == 200
    assert answer.content == (STATIC / "comet.min.js").read_bytes()
