"""The committed static/comet.min.js: exactly what scripts/build-snippet makes of static/src/
now, within budget, parses and runs in Chromium, and is what the relay serves (so the other e2e
tests exercise it)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.snippet_size import BUDGET, measure
from e2e.conftest import Browsing, Stack
from tests.support import missing

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"


def test_the_min_file_is_the_build_of_the_current_source(tmp_path: Path) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("building the snippet needs Node.js and npm")
    rebuilt = tmp_path / "comet.min.js"
    # the first run installs the locked build packages from the npm registry
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-snippet"), str(rebuilt)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, f"scripts/build-snippet failed:\n{build.stdout}{build.stderr}"
    committed = (STATIC / "comet.min.js").read_bytes()
    assert rebuilt.read_bytes() == committed, (
        "static/comet.min.js is not the build of static/src/: run scripts/build-snippet"
    )


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


def test_the_docs_give_the_stub_line_as_the_relay_serves_it() -> None:
    """The tag's first line in README.md and docs/snippet.md is static/comet-stub.js."""
    stub = (STATIC / "comet-stub.js").read_text().strip()
    assert "\n" not in stub and len(stub) < 600  # one short line
    for doc in (ROOT / "README.md", ROOT / "docs" / "snippet.md"):
        assert f"<script>{stub}</script>" in doc.read_text(), f"{doc.name} shows another stub"


def test_the_stub_line_alone_queues_calls_and_leaves_window_fbq_plain(
    browsing: Callable[..., Browsing],
) -> None:
    b = browsing()
    b.page.set_content("<p>the stub alone: queues calls, waits for a pixel</p>")
    b.page.add_script_tag(content=(STATIC / "comet-stub.js").read_text())
    b.page.evaluate("comet('track', 'purchase'); fbq = function () {}; fbq(1)")
    assert b.page.evaluate("comet.q.length") == 1
    assert b.page.evaluate("Object.getOwnPropertyDescriptor(window, 'fbq').value === fbq")
    assert b.errors == []
