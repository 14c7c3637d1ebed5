"""The default outbox: one SQLite file in WAL mode, and group commit with a pipelined fsync.

Every write goes through one writer thread that owns the write connection and commits the jobs
waiting in groups, so many concurrent requests share one fsync; a caller of a durable write is
answered only after a sync thread has fsynced the WAL past its group's commit, while the
writer goes on with the next group. Reads (stats, next_due, dead_letters, changes) use a second
connection and never wait for the write lock. Other processes (a separate forwarder, the CLI)
may open the same file at the same time. A third thread checkpoints the WAL every
`CHECKPOINT_SECONDS` (`FORWARD_CHECKPOINT_SECONDS` in a process that only forwards), so that no
request's commit pays for it.

    outbox.py   SQLiteOutbox: the Outbox methods
    writer.py   the writer (group commit), syncer and checkpointer threads
    enqueue.py  the enqueue's job: dedup and insert a tick's events in one savepoint
    changes.py  the `changes` feed: the cursor and its queries
    figures.py  the queue figures for the metrics (`QueueAges`)
    schema.py   opening the file: its settings, and schema.sql with SCHEMA_VERSION
"""

from __future__ import annotations

from relay.store.sqlite.changes import ACCEPTED_AFTER, STEPS_AFTER
from relay.store.sqlite.outbox import CLAIM, SQLiteOutbox
from relay.store.sqlite.schema import SCHEMA_VERSION, WRITER_CHECKPOINT_PAGES

__all__ = [
    "ACCEPTED_AFTER",
    "CLAIM",
    "SCHEMA_VERSION",
    "STEPS_AFTER",
    "WRITER_CHECKPOINT_PAGES",
    "SQLiteOutbox",
]
