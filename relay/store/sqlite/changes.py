"""`changes` on the SQLite outbox: acceptances read from the outbox table by id, every later
step from the outbox_steps log (kept by a trigger, see schema.sql) by seq.

The cursor is "<last outbox id>-<last step seq>"; both queries read a primary key from the
cursor on, so following costs O(new rows).
"""

from __future__ import annotations

import sqlite3

from relay.store.base import Change, ChangePage

STEPS_KEPT_SECONDS = 3600.0  # how long the step log behind `changes` keeps a step

ACCEPTED_AFTER = """
SELECT id, space, event_name, idempotency_key, received_at
FROM outbox WHERE id > ? ORDER BY id LIMIT ?
"""
STEPS_AFTER = """
SELECT s.seq, s.event_id, s.state, s.at, s.attempts, s.last_status, s.last_message,
       o.space, o.event_name, o.idempotency_key
FROM outbox_steps AS s LEFT JOIN outbox AS o ON o.id = s.event_id
WHERE s.seq > ? ORDER BY s.seq LIMIT ?
"""


def present(conn: sqlite3.Connection) -> ChangePage:
    """An empty page whose cursor is the present: following starts from what comes next."""
    (last_id,) = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
    (last_seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox_steps").fetchone()
    return ChangePage([], f"{last_id}-{last_seq}")


def parse_cursor(cursor: str) -> tuple[int, int]:
    """(last outbox id, last step seq) of a cursor; ValueError if it is not one of ours."""
    try:
        accepted, steps = (int(part) for part in cursor.split("-"))
    except ValueError:
        raise ValueError(f"not a cursor of the SQLite outbox: {cursor!r}") from None
    return accepted, steps


def read_page(
    conn: sqlite3.Connection, accepted_after: int, steps_after: int, limit: int
) -> ChangePage:
    """One page of `changes`, read in one snapshot: the acceptances, then the later steps."""
    out = [
        Change(at, id_, space, name, key, "accepted")
        for id_, space, name, key, at in conn.execute(ACCEPTED_AFTER, (accepted_after, limit))
    ]
    if out:
        accepted_after = out[-1].id
    held_back = len(out) == limit  # more acceptances wait: their steps must wait too
    steps = conn.execute(STEPS_AFTER, (steps_after, limit))
    for seq, event_id, state, at, attempts, status, message, space, name, key in steps:
        if held_back and event_id > accepted_after:
            break
        steps_after = seq
        if space is None:  # the event was pruned meanwhile
            continue
        out.append(
            Change(at or 0.0, event_id, space, name, key, state, attempts, status, message or "")
        )
    return ChangePage(out, f"{accepted_after}-{steps_after}")
