"""Outbox ids of Redis events: `space_number << SEQ_BITS | seq`.

The Space number comes from the `comet:spaces` registry, the seq from the Space's own
counter, so an id alone finds its Space's keys, ids stay below 2**63, and within a Space they
grow in acceptance order, as SQLite's do. (A global INCR per event would have been a second
round trip per enqueue, or a global key inside a Space's script.)
"""

from __future__ import annotations

SEQ_BITS = 40
SEQ_MASK = (1 << SEQ_BITS) - 1
MAX_SPACES = (1 << (63 - SEQ_BITS)) - 1


def event_id(number: int, seq: int) -> int:
    """The Outbox id of the event `seq` of the Space numbered `number`."""
    return number << SEQ_BITS | seq


def split_id(id_: int) -> tuple[int, int]:
    """(Space number, seq) of an Outbox id."""
    return id_ >> SEQ_BITS, id_ & SEQ_MASK
