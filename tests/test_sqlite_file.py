"""relay/sqlite_file.py's switch to WAL when another process opens the new file at once.

SQLite refuses the second of two connections that both read a new file and then ask for its
lock to switch it to WAL, without waiting ("database is locked"); `serve --workers 2` lost a
worker's start to it about once in 25 first starts, and `serve` and `forward` started together
can meet it too. The refusal is timing, so these tests give it on purpose with a connection
that answers the PRAGMA as SQLite did.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from relay.sqlite_file import wal_mode


def refusal(code: int, message: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]  # what the sqlite3 module sets
    return exc


class Refusing:
    """A connection whose `PRAGMA journal_mode = WAL` is refused `times` times, then done."""

    def __init__(self, times: float, code: int = sqlite3.SQLITE_BUSY) -> None:
        self.times, self.code, self.tries = times, code, 0

    def execute(self, sql: str) -> Any:
        assert sql == "PRAGMA journal_mode = WAL"
        self.tries += 1
        if self.tries <= self.times:
            raise refusal(self.code, "database is locked")
        return self

    def fetchone(self) -> tuple[str]:
        return ("wal",)


def test_the_switch_is_tried_again_while_another_opener_holds_the_lock() -> None:
    conn = Refusing(times=3)
    assert wal_mode(conn, busy_timeout=5.0) == "wal"  # type: ignore[arg-type]
    assert conn.tries == 4


def test_the_switch_gives_up_after_the_busy_timeout() -> None:
    conn = Refusing(times=float("inf"))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        wal_mode(conn, busy_timeout=0.05)  # type: ignore[arg-type]
    assert conn.tries >= 2


def test_another_error_is_not_tried_again() -> None:
    conn = Refusing(times=1, code=sqlite3.SQLITE_IOERR)
    with pytest.raises(sqlite3.OperationalError):
        wal_mode(conn, busy_timeout=5.0)  # type: ignore[arg-type]
    assert conn.tries == 1


def test_a_real_new_file_is_switched(tmp_path: Any) -> None:
    conn = sqlite3.connect(tmp_path / "relay.db")
    try:
        assert wal_mode(conn, busy_timeout=1.0) == "wal"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
