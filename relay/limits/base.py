"""The rate limiter's interface: a token bucket per key, and the decision it gives.

A bucket holds at most `limit` tokens and refills at `limit` per minute, so a Space with
1000/min may burst to 1000 and then sustain 1000/min. `relay.limits.memory` keeps the buckets
in the process, `relay.limits.redis` in a Redis shared by every relay; both pass the same
tests (tests/test_ratelimit.py).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Protocol

from relay.lifecycle import Runs


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 8 times as much, per request
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until one request would be allowed; 0 when allowed

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers every answer carries (Retry-After when refused)."""
        h = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining)}
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after)
        return h

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as ASGI sends them: lower-case names, bytes."""
        raw = [(b"x-ratelimit-limit", b"%d" % self.limit),
               (b"x-ratelimit-remaining", b"%d" % self.remaining)]
        if not self.allowed:
            raw.append((b"retry-after", b"%d" % self.retry_after))
        return raw


class RateLimiter(Runs, Protocol):
    """A limiter shared by whatever serves the same keys (one process, or every relay);
    started and closed by `async with limiter:` (relay.lifecycle)."""

    async def take(self, key: str, limit_per_minute: int, cost: int = 1) -> Decision:
        """Spend `cost` of `key`'s allowance, if that much is left (else spend nothing)."""
        ...

    async def peek(self, key: str, limit_per_minute: int) -> Decision:
        """What `take` would report, without spending anything."""
        ...


def refilled(tokens: float, at: float, now: float, limit: int) -> float:
    """A bucket of `limit` a minute that held `tokens` at `at`, at `now`: refilled, never over
    `limit` (a clock set back refills nothing)."""
    return min(float(limit), tokens + max(0.0, now - at) * limit / 60.0)


def decision(allowed: bool, limit: int, tokens: float, cost: int = 1) -> Decision:
    """The Decision for a bucket of `limit` a minute holding `tokens` after a take of `cost`
    (refused: `retry_after` is when `cost` tokens will be there; never, above `limit`)."""
    wanted = min(cost, limit)
    retry_after = 0 if allowed else max(1, math.ceil((wanted - tokens) * 60.0 / limit))
    return Decision(allowed, limit, int(tokens), retry_after)


def address_bucket(address: str | None) -> str:
    """The per-client bucket of a client address (canonical, as `relay.enrich.client_address`
    gives it; None when there is none).

    An IPv6 client owns at least a /64 (one home, one phone): a bucket per IPv6 address would
    give each of them 2**64 buckets, so the bucket is the /64. Anything that is not an IP
    address shares one bucket: it cannot be told apart.
    """
    if address is None:
        return "ip:?"
    if ":" in address:
        return f"ip:{ipaddress.ip_network(address + '/64', strict=False)}"
    return f"ip:{address}"
