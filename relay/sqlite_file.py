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


_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class WalSync:
    """`fdatasync` of a database file's WAL, for a writer that commits with
    `synchronous = NORMAL` and makes its commits durable itself (the outbox's syncer).

    The WAL exists, as the same file, while any connection to the database is open (SQLite
    takes no lock on it, so this descriptor's close drops none); should it have been replaced,
    the next sync opens the new one. SQLite names the WAL after the file a symbolic link
    leads to, and so does this."""

    def __init__(self, path: str) -> None:
        self.path = f"{os.path.realpath(path)}-wal"
        self._fd: int | None = None
        self._file: tuple[int, int] = (0, 0)

    def __call__(self) -> None:
        st = os.stat(self.path)
        if self._fd is None or (st.st_dev, st.st_ino) != self._file:
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY)
            fst = os.fstat(self._fd)
            self._file = (fst.st_dev, fst.st_ino)
        _datasync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
