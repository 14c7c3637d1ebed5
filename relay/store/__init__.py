"""Durable storage of accepted events: the Outbox interface and its backends."""

from __future__ import annotations

from relay.settings.model import is_redis_url
from relay.store.base import Claimed, NewEvent, Outbox, OutboxStats

__all__ = ["Claimed", "NewEvent", "Outbox", "OutboxStats", "open_outbox"]


def open_outbox(database: str, *, receives: bool = True) -> Outbox:
    """The backend that `database` names: a SQLite file path (default) or a redis:// URL.
    `receives`: whether this process enqueues events (a SQLite file is checkpointed less
    often by a process that only forwards)."""
    if is_redis_url(database):
        from relay.store.redis import RedisOutbox

        return RedisOutbox(database)
    from relay.store.sqlite import SQLiteOutbox
    from relay.store.sqlite.writer import CHECKPOINT_SECONDS, FORWARD_CHECKPOINT_SECONDS

    every = CHECKPOINT_SECONDS if receives else FORWARD_CHECKPOINT_SECONDS
    return SQLiteOutbox(database, checkpoint_seconds=every)
