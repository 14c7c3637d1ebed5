"""`changes` on the Redis outbox: each Space's step log (a stream, `comet:{S}:log`), read by
lua/changes.lua and merged here in Redis's commit order (the entry ids).

The cursor is JSON: each Space's last log entry read. Steps of an event that prune has
dropped are skipped when its delivery is among the entries read with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from redis import asyncio as aioredis

from relay.store.base import Change, ChangePage
from relay.store.redis.ids import event_id
from relay.store.redis.scripts import text

LOG_FIELDS = 10  # items per log entry in the changes script's answer


def merge(
    read: dict[str, str], logs: dict[str, list[Any]], limit: int, numbers: dict[str, int]
) -> ChangePage:
    """The page after `read` from the changes script's answer of each Space (`logs`), whose
    Space numbers are `numbers`."""
    page = _Page(read, limit, _horizon(logs, limit))
    for space, flat, i in sorted(_entries(logs), key=lambda x: _entry_id(x[1][x[2]])):
        if not page.take(space, flat[i : i + LOG_FIELDS], numbers[space]):
            break
    return page.done()


def _entry_id(raw: bytes | str) -> tuple[int, int]:
    """A stream entry id ("ms-n") as a sortable pair."""
    ms, _, n = text(raw).partition("-")
    return int(ms), int(n or 0)


def cursor(read: dict[str, str]) -> str:
    """The cursor of a page that read each Space's log up to the entry id `read[space]`."""
    return json.dumps(read, sort_keys=True, separators=(",", ":"))


def parse_cursor(cursor: str) -> dict[str, str]:
    """Each Space's last entry id read; ValueError if `cursor` is not one of ours."""
    try:
        read = json.loads(cursor)
        if not isinstance(read, dict) or not all(isinstance(v, str) for v in read.values()):
            raise ValueError
    except ValueError:
        raise ValueError(f"not a cursor of the Redis outbox: {cursor!r}") from None
    return read


async def log_ends(client: aioredis.Redis, logs: list[tuple[str, str]]) -> dict[str, str]:
    """Each Space's last log entry id ("0-0" for an empty log), in one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for _, key in logs:
            pipe.xrevrange(key, count=1)
        lasts = await pipe.execute()
    return {space: text(last[0][0]) if last else "0-0" for (space, _), last in zip(logs, lasts)}


def _entries(logs: dict[str, list[Any]]) -> Iterable[tuple[str, list[Any], int]]:
    """(Space, its flat answer, where an entry starts) for every entry read."""
    for space, flat in logs.items():
        for i in range(0, len(flat), LOG_FIELDS):
            yield space, flat, i


def _horizon(logs: dict[str, list[Any]], limit: int) -> tuple[int, int] | None:
    """The last entry id every Space was read up to: a Space that filled its `limit` may have
    older entries waiting than another's, so no page goes past its last one read."""
    full = [
        _entry_id(flat[-LOG_FIELDS]) for flat in logs.values() if len(flat) >= limit * LOG_FIELDS
    ]
    return min(full) if full else None


class _Page:
    """A page of `changes` being filled in commit order: up to `limit` acceptances and up to
    `limit` later steps, each Space's entries taken as a prefix, so the cursor skips none."""

    def __init__(self, read: dict[str, str], limit: int, horizon: tuple[int, int] | None) -> None:
        self.read = dict(read)
        self.limit = limit
        self.horizon = horizon
        self.accepted: list[Change] = []
        self.steps: list[Change] = []

    def take(self, space: str, f: list[Any], number: int) -> bool:
        """Add one log entry (unless its event was pruned); False when the page is full."""
        entry_id, pruned, seq, state, at, name, key, attempts, status, message = f
        if self.horizon is not None and _entry_id(entry_id) > self.horizon:
            return False
        state = text(state)
        kind = self.accepted if state == "accepted" else self.steps
        if len(kind) >= self.limit:
            return False
        self.read[space] = text(entry_id)
        if not int(pruned):
            kind.append(Change(
                at=float(at), id=event_id(number, int(seq)), space=space,
                event_name=text(name), idempotency_key=text(key), state=state,
                attempts=int(attempts), last_status=int(status) if status else None,
                last_message=text(message),
            ))  # fmt: skip
        return True

    def done(self) -> ChangePage:
        return ChangePage(self.accepted + self.steps, cursor(self.read))
