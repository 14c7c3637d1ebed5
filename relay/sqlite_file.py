"""Connections to the outbox's SQLite file, for the outbox and for the parts that keep a
table of their own in it (the pacer, the limiter shared by `serve --workers N`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

WAL_RETRY_SECONDS = 0.01  # the pause between two tries of the switch to WAL


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the file at `path`, for any thread."""
    # isolation_level=None: no implicit transactions; the callers issue BEGIN/COMMIT.
    return sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )


def private_file(path: str) -> None:
    """Create the outbox file as its owner's alone (0600), or make it so: it holds emails and
    client addresses. SQLite creates the -wal and -shm files with the mode of the file, and
    an existing -wal or -shm is made private too. A file owned by another user is left as it
    is (the relay could not change it, and the owner chose)."""
    if path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Only a new file is opened here: closing any descriptor of a file drops every POSIX
    # lock this process holds on it, the locks of SQLite's own connections included.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


def wal_mode(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """Switch the file to WAL (a no-op once it is); the journal mode it then has.

    The switch of a new file takes its exclusive lock. When two processes open the new file
    at once (the workers of `serve --workers N`, or `serve` and `forward` started together),
    both read it first, and the one that then asks for the lock second is refused at once
    ("database is locked"): SQLite does not wait there, since both waiting would never end.
    The refused one tries again, for up to `busy_timeout`, as it would wait for any lock."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_SECONDS)


def open_side_table(path: str, busy_timeout: float, schema: str) -> sqlite3.Connection:
    """A connection of a part that keeps a table of its own in the file: the file private
    (see `private_file`), WAL, `synchronous = NORMAL` (a commit survives the process being
    killed, though not a power cut, and costs no fsync), the table made by `schema` if needed."""
    private_file(path)
    conn = connect(path, busy_timeout)
    try:
        wal_mode(conn, busy_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(schema)
    except BaseException:
        conn.close()
        raise
    return conn
