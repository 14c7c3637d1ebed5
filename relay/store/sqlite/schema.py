"""Opening the outbox file: its settings (WAL, `synchronous=NORMAL` with the writer's own fsync
of the WAL, how large the WAL may grow)
and its schema, `schema.sql`, created or checked against SCHEMA_VERSION."""

from __future__ import annotations

import sqlite3
from importlib.resources import files

from relay.errors import Unavailable
from relay.sqlite_file import connect, private_file, wal_mode

# 2: outbox.changed_at and the outbox_steps log (for `outbox tail`)
# 3: each event's source and twin, each dedup key's event, three priorities (trust tiers)
SCHEMA_VERSION = 3
SCHEMA = files("relay.store.sqlite").joinpath("schema.sql").read_text(encoding="utf-8")
# The upgrade of a file written by the schema before it, run before SCHEMA.
UPGRADES = {2: files("relay.store.sqlite").joinpath("upgrade_2_to_3.sql").read_text("utf-8")}
WRITER_CHECKPOINT_PAGES = 20000  # about 80 MB of WAL with 4 KiB pages
WAL_KEPT_BYTES = 64 * 1024 * 1024  # a WAL larger than this is truncated after a checkpoint


def open_file(path: str, busy_timeout: float) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """Create the file (private, see `private_file`) and schema if needed; the write
    connection and a read-only one.

    Raises Unavailable if the file cannot use WAL mode or holds another schema version.
    """
    private_file(path)
    conn = connect(path, busy_timeout)
    try:
        mode = wal_mode(conn, busy_timeout)
        if mode.lower() != "wal":
            raise Unavailable(f"{path}: SQLite could not use WAL mode (got {mode!r}).")
        conn.execute("PRAGMA synchronous = FULL")  # for the schema's own commit below
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_KEPT_BYTES}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise Unavailable(
                f"{path}: outbox schema {version} is newer than this relay's "
                f"({SCHEMA_VERSION}); upgrade the relay."
            )
        if 0 < version < SCHEMA_VERSION and version not in UPGRADES:
            raise Unavailable(
                f"{path}: outbox schema {version} was made by a development version "
                f"of the relay; deliver what it holds with that version, then remove it."
            )
        upgrade = UPGRADES.get(version, "")
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{upgrade}\n{SCHEMA}\n"
            f"PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
        )
        # From here the writer's syncer fsyncs the WAL before a durable commit is answered,
        # outside the write lock (writer.py).
        conn.execute("PRAGMA synchronous = NORMAL")
        # Statement journals (each UPDATE's undo record within its transaction, for the
        # forwarder's claims and marks a few pages per row) in memory, not in a temporary
        # file: a crash needs only the WAL (bench/README.md, issue 16).
        conn.execute("PRAGMA temp_store = MEMORY")
        reader = connect(path, busy_timeout)
        reader.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn, reader
