"""What the fuzz tests share: how many examples to run, and settings that keep CI deterministic.

CI runs a small, fixed number of examples with a derandomized search, so a run is bounded and a
failure reproduces. `FUZZ_EXAMPLES=5000` (any positive integer) makes every fuzz test run that
many examples per test instead, with the same determinism: a long fuzz, not a flaky one.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES_ENV = "FUZZ_EXAMPLES"


def fuzz_examples(default: int) -> int:
    """`default`, or the positive integer in FUZZ_EXAMPLES when it is set."""
    raw = os.environ.get(FUZZ_EXAMPLES_ENV, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{FUZZ_EXAMPLES_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings for one fuzz test: bounded, derandomized, no deadline, no database.

    No deadline: the machine is shared, and a slow example is not a wrong one. No example
    database: what a run finds must come from the fixed search, not from an earlier run.
    """
    return settings(
        max_examples=fuzz_examples(default_examples),
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
