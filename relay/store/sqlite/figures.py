"""`QueueAges.queue_figures` on the SQLite outbox (for the queue metrics).

The queued count comes from the trigger-kept counts, the conversions of each source are
counted on the claim index (so the cost grows with the queued conversions only) and page
views are the rest; the oldest of each priority is one index seek.
"""

from __future__ import annotations

import sqlite3

from relay.rules.events import (
    PRIORITY_API_CONVERSION,
    PRIORITY_BROWSER_CONVERSION,
    PRIORITY_PAGE_VIEW,
)
from relay.store.base import QueueFigures

# Both stay inside the claim index's (space, priority) range
QUEUED_OF_PRIORITY = """
SELECT count(*) FROM outbox INDEXED BY outbox_claim
WHERE space = ? AND priority = ? AND status = 'queued'
"""
OLDEST_OF_PRIORITY = """
SELECT received_at FROM outbox INDEXED BY outbox_claim
WHERE space = ? AND priority = ? AND status = 'queued' ORDER BY id LIMIT 1
"""


def read_figures(conn: sqlite3.Connection) -> QueueFigures:
    """The depth and the oldest received_at of each Space and priority, in one snapshot."""
    figures = QueueFigures()
    for space, queued in conn.execute(
        "SELECT space, n FROM outbox_counts WHERE bucket = 'queued' AND n > 0"
    ).fetchall():
        depths = {
            p: conn.execute(QUEUED_OF_PRIORITY, (space, p)).fetchone()[0]
            for p in (PRIORITY_API_CONVERSION, PRIORITY_BROWSER_CONVERSION)
        }
        depths[PRIORITY_PAGE_VIEW] = queued - sum(depths.values())
        for priority, depth in depths.items():
            if depth <= 0:
                continue
            figures.depth[(space, priority)] = depth
            row = conn.execute(OLDEST_OF_PRIORITY, (space, priority)).fetchone()
            if row is not None:
                figures.oldest[(space, priority)] = row[0]
    return figures
