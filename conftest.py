"""Suite-wide rules. With CI=true a skipped test is a failure: CI has every browser and service."""

from __future__ import annotations

import pytest

from tests.support import IN_CI


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must have everything: {report.longrepr}"
