"""Durable storage of accepted events: the Outbox interface and its backends."""

from __future__ import annotations

from relay.settings.model import is_redis_url
from relay.store.base import Claimed, NewEvent, Outbox, OutboxStats

__all__ = ["Claimed", "NewEvent", "Outbox", "OutboxStats", "open_outbox"]


def open_outbox(database: str) -> Outbox:
    """The backend that `database` names: a SQLite file path (default) or a redis:// URL."""
    if is_redis_url(database):
        from relay.store.redis import RedisOutbox

        return RedisOutbox(database)
    from relay.store.sqlite import SQLiteOutbox

    return SQLiteOutbox(database)
