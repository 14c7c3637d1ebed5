"""The in-process token bucket, with an injected clock."""

from __future__ import annotations

from relay.ratelimit import MemoryRateLimiter


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_allows_the_limit_then_refuses_with_retry_after() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    decisions = [limiter.take("s", 60) for _ in range(61)]
    assert all(d.allowed for d in decisions[:60])
    assert [d.remaining for d in decisions[:3]] == [59, 58, 57]
    last = decisions[60]
    assert not last.allowed and last.remaining == 0
    assert last.retry_after == 1  # 60/min refills one token a second
    assert last.headers()["Retry-After"] == "1"


def test_refills_at_the_configured_rate() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    for _ in range(10):
        limiter.take("s", 10)
    assert not limiter.take("s", 10).allowed
    clock.t += 6.0  # 10/min: one token every 6 s
    assert limiter.take("s", 10).allowed
    assert not limiter.take("s", 10).allowed
    clock.t += 60.0
    assert limiter.peek("s", 10).remaining == 10  # never more than the limit


def test_retry_after_counts_whole_seconds_up() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    limiter.take("s", 1)
    refused = limiter.take("s", 1)
    assert not refused.allowed and refused.retry_after == 60
    clock.t += 59.5
    assert limiter.take("s", 1).retry_after == 1


def test_keys_are_independent_and_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock, max_keys=100)
    assert limiter.take("a", 1).allowed
    assert limiter.take("b", 1).allowed
    assert not limiter.take("a", 1).allowed
    for i in range(1000):
        limiter.take(f"ip-{i}", 5)
    assert len(limiter._buckets) <= 100


def test_peek_spends_nothing() -> None:
    limiter = MemoryRateLimiter(Clock())
    for _ in range(5):
        assert limiter.peek("s", 3).remaining == 3
    assert limiter.take("s", 3).remaining == 2
