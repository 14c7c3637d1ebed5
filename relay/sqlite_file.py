"""Connections to the outbox's SQLite file, for the outbox and for the parts that keep a
table of their own in it (the pacer, the limiter shared by `serve --workers N`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path


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


def open_side_table(path: str, busy_timeout: float, schema: str) -> sqlite3.Connection:
    """A connection of a part that keeps a table of its own in the file: the file private
    (see `private_file`), WAL, `synchronous = NORMAL` (a commit survives the process being
    killed, though not a power cut, and costs no fsync), the table made by `schema` if needed."""
    private_file(path)
    conn = connect(path, busy_timeout)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(schema)
    except BaseException:
        conn.close()
        raise
    return conn
