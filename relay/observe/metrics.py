"""Prometheus metrics of the relay, served at GET /metrics in the text exposition format.

Counters and histograms (every name starts with `comet_`):

- `comet_events_received_total{space, source, outcome, reason}`: each event the relay was
  sent; `source` is "browser" or "api"; `outcome` is "accepted", "merged" (met its twin
  from the other source), "duplicate", "bot" or "rejected"; for "rejected", `reason` is the
  first refused field of the event, or "auth", "origin" (the browser's Origin is not
  allowed), "rate_limit", "too_large", "timeout", "body" (not readable as events) or
  "unavailable" (the store failed). A field the API does not have counts as
  "unknown_field": the set of labels is closed (`REASONS`). A refused request whose Space is
  unknown counts under `space="-"`; a refused browser batch counts once.
- `comet_deliveries_total{space, status}`: every upstream answer (status "none" when there
  was no answer: timeout or reset).
- `comet_retries_total{space}`, `comet_dead_letters_total{space}`,
  `comet_upstream_pauses_total{space}` (401/403 answers).
- `comet_request_duration_seconds{route, method}`: handler time per route template.
- `comet_upstream_duration_seconds{space}`: time of each upstream request.

Gauges read from the outbox at scrape time (so they are right whatever process scrapes, and
agree across processes): `comet_outbox_events{space, state}` (queued, retrying, delivered,
dead), and from `QueueAges.queue_figures` (both backends) `comet_queue_depth{space, priority}`
(queued events, retrying and in-flight ones included; 0 for a priority with none) and
`comet_oldest_queued_age_seconds{space, priority}` (absent when nothing is queued), with
priority "api_conversion", "browser_conversion" or "page_view". `scrape` reads them and renders everything.

Who counts: `serve` counts what it receives and, when it forwards, what it delivers; a
`comet-relay forward` process counts what it delivers (`relay.observe.Observer` for both).
Several processes on one machine (uvicorn workers, `serve --no-forward` with forward
processes): set PROMETHEUS_MULTIPROC_DIR to an empty directory writable by every one of them
(and empty it before each start). prometheus_client then keeps the counters and histograms in
files there, one set per pid, and GET /metrics in any process sums every process's figures.
Without it each process counts on its own, which is right for one process; a forward process
on another machine serves its own with `forward --metrics-port` (`relay.metrics_http`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from relay.rules.events import (
    PRIORITY_API_CONVERSION,
    PRIORITY_BROWSER_CONVERSION,
    PRIORITY_PAGE_VIEW,
)
from relay.rules.fields import FIELDS
from relay.store.base import Outbox, OutboxStats, QueueAges, QueueFigures

log = logging.getLogger("relay")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_SPACE = "-"
PRIORITY_NAMES = {
    PRIORITY_API_CONVERSION: "api_conversion",
    PRIORITY_BROWSER_CONVERSION: "browser_conversion",
    PRIORITY_PAGE_VIEW: "page_view",
}
# Every `reason` label: none, the API's fields, the browser's own names (`event_id`, a batch's
# `e`, an `event` that is not an object), and the refusals of a request as a whole.
REASONS = frozenset(
    {"", *FIELDS, "event_id", "e", "event", "unknown_field", "body", "auth", "origin",
     "rate_limit", "too_large", "timeout", "unavailable"}
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The relay's counters and histograms; one per app (tests get their own registry).

    Label children are cached on first use, so the hot path is a dict lookup and an increment.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "comet_events_received", "Events sent to the relay, by outcome.",
            ("space", "source", "outcome", "reason"), registry=r,
        )
        self.deliveries = Counter(
            "comet_deliveries", "Upstream answers, by status.", ("space", "status"), registry=r
        )
        self.retries = Counter("comet_retries", "Deliveries to try again.", ("space",), registry=r)
        self.dead = Counter("comet_dead_letters", "Events moved to the dead letters.", ("space",),
                            registry=r)
        self.pauses = Counter("comet_upstream_pauses", "Upstream 401/403 answers.", ("space",),
                              registry=r)
        self.request_seconds = Histogram(
            "comet_request_duration_seconds", "Handler time per route.", ("route", "method"),
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_seconds = Histogram(
            "comet_upstream_duration_seconds", "Time of each upstream request.", ("space",),
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # what the handlers and the forwarder report -------------------------------------------

    def event(self, source: str, space: str, outcome: str, reason: str = "", n: int = 1) -> None:
        """Count `n` events of `space` sent from `source` with this outcome.

        `reason` is a label from a closed set (`REASONS`): a refused field's name is the
        sender's to choose, and a label per name would let anyone grow /metrics and the
        process's memory without bound, so a name that is no field of the API counts as
        "unknown_field"."""
        if reason not in REASONS:
            reason = "unknown_field"
        self._child(self.received, space, source, outcome, reason).inc(n)

    def settled(self, space: str, state: str, status: int | None, seconds: float) -> None:
        """Count one upstream attempt: its answer, its time, and what became of the event."""
        self._child(self.deliveries, space, str(status) if status is not None else "none").inc()
        self._child(self.upstream_seconds, space).observe(seconds)
        if state == "retrying":
            self._child(self.retries, space).inc()
        elif state == "dead":
            self._child(self.dead, space).inc()
        elif state == "paused":
            self._child(self.pauses, space).inc()

    def request(self, route: str, method: str, seconds: float) -> None:
        self._child(self.request_seconds, route, method).observe(seconds)

    def request_timer(self, route: str, method: str) -> Callable[[float], None]:
        """`request` for one route, as one call per request (the label lookup done once)."""
        observe: Callable[[float], None] = self._child(self.request_seconds, route, method).observe
        return observe

    # exposition ---------------------------------------------------------------------------

    def render(
        self, stats: OutboxStats | None, queue: QueueFigures | None = None, now: float = 0.0
    ) -> bytes:
        """Every metric in the text format, with the outbox gauges of `stats` (None: left out),
        the depth of each (Space, priority) from `queue` and the age at `now` of its oldest
        queued event."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            text = generate_latest(registry)
        else:
            text = generate_latest(self.registry)
        if stats is not None:
            gauges = CollectorRegistry()
            gauges.register(_OutboxCollector(stats, queue or QueueFigures(), now))
            text += generate_latest(gauges)
        return text


class _OutboxCollector:
    """The outbox's counts as gauges, from one `stats()` snapshot."""

    def __init__(self, stats: OutboxStats, queue: QueueFigures, now: float) -> None:
        self.stats = stats
        self.queue = queue
        self.now = now

    def collect(self) -> list[GaugeMetricFamily]:
        depth = GaugeMetricFamily("comet_queue_depth", "Queued events (retrying included).",
                                  labels=("space", "priority"))
        states = GaugeMetricFamily("comet_outbox_events", "Events in the outbox, by state.",
                                   labels=("space", "state"))
        depths: dict[tuple[str, int], int] = {}
        for space, counts in self.stats.spaces.items():
            depths.update(((space, p), 0) for p in PRIORITY_NAMES)  # a series per Space
            for state in ("queued", "retrying", "delivered", "dead"):
                states.add_metric((space, state), counts.get(state, 0))
        depths.update(self.queue.depth)
        for (space, priority), n in sorted(depths.items()):
            depth.add_metric((space, PRIORITY_NAMES.get(priority, str(priority))), n)
        age = GaugeMetricFamily("comet_oldest_queued_age_seconds",
                                "Age of the oldest queued event.", labels=("space", "priority"))
        for (space, priority), received_at in sorted(self.queue.oldest.items()):
            name = PRIORITY_NAMES.get(priority, str(priority))
            age.add_metric((space, name), max(0.0, self.now - received_at))
        return [depth, states, age]


async def scrape(metrics: Metrics, outbox: Outbox, now: float) -> bytes:
    """What GET /metrics answers, in `serve` and in `forward --metrics-port`: the counters
    and histograms, and the outbox gauges read now (left out, with a warning, if the outbox
    fails: the counters are still worth a scrape, and /readyz tells the rest)."""
    queue = None
    try:
        # Figures first: the counts read after them are at least as recent, so a scrape that
        # shows an empty queue also shows every event it held as delivered or dead.
        if isinstance(outbox, QueueAges):
            queue = await outbox.queue_figures()
        stats = await outbox.stats()
    except Exception:  # any failure of the store leaves the gauges out
        log.warning("outbox stats failed during a metrics scrape", exc_info=True)
        stats = None
    return metrics.render(stats, queue, now)
