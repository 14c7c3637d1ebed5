"""Pacing: when each upstream request may start, shared by every forwarder of a Space.

`base.Pacer` is the interface; `memory`, `sqlite` and `redis` implement it, and one set of
tests (tests/test_pacing.py) runs against all three.
"""

from __future__ import annotations

from relay.delivery.pacing.base import Pacer
from relay.settings.model import is_redis_url
from relay.store.base import Outbox


def open_pacer(database: str, outbox: Outbox | None = None) -> Pacer:
    """The pacer that `database` implies, shared by every forwarder on the SQLite file (kept
    in the file itself) or on the Redis. `outbox`: this process's, on the same `database`;
    a SQLite pacer makes its writes through the outbox's writer thread."""
    if is_redis_url(database):
        from relay.delivery.pacing.redis import RedisPacer  # imported late: it imports redis

        return RedisPacer(database)
    from relay.delivery.pacing.sqlite import SQLitePacer
    from relay.store.sqlite import SQLiteOutbox

    shared = outbox if isinstance(outbox, SQLiteOutbox) and outbox.path == database else None
    return SQLitePacer(database, writer=shared)
