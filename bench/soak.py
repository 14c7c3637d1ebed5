"""Soak and chaos: mixed load on a relay while its upstream fails and the relay is SIGKILLed.

For `--seconds` a load generator sends, to a real `comet-relay serve` process, a mix of
browser batches (`POST /e`: page views, conversions, now and then an invalid event) and
Create Event API calls (purchases, leads, invalid events, events the upstream will refuse),
plus resends of events already acknowledged (same idempotency key, same event id, or the same
purchase's order id under a new key), each resend marked so it can be told apart upstream.
Meanwhile `tests/fake_upstream.py` fails on a schedule (spells of 500s, 429 with Retry-After,
dropped connections and slow answers, in turn), answers 422 to every event marked to be
refused, and the relay is SIGKILLed `--kills` times and started again on the same data. The
last part of the run (`--calm-tail`) has no kill, so the relay's memory can be followed over
one process's life. Then faults stop, the backlog drains, the relay stops, and the outbox is
read with `comet-relay outbox stats` and `outbox dead`.

    python -m bench.soak --backend sqlite|redis --seconds 300 --kills 6 [--rate 12]

The report (printed as a table, written to bench/results/soak-BACKEND.json) holds what was
sent, accepted, refused, deduplicated, delivered and dead, the kills and the faults by kind,
the upstream's duplicates with the kill each one follows, the busiest second and minute per
Space against its rate, and the relay's resident memory over time; `problems` lists every
broken promise (exit status 1 when there is one):

- accepted = delivered + dead, by the relay's outbox and by the upstream's own record; dead
  are exactly the events the upstream refused with a 4xx; no accepted event is lost;
- nothing refused or deduplicated by the relay ever reaches the upstream, and an API event
  reaches it exactly as accepted; a browser event carries what only the relay sets;
- the upstream sees an event twice only when its first delivery came just before a kill;
- after a 429 the Space's upstream sees no new request until Retry-After has passed, a kill
  and restart included (the hold is stored with the outbox; only a kill within
  `HOLD_STORE_S` of the 429, before the hold can be stored, makes a miss a note);
- no Space's upstream sees more than rate/60 + 2 requests in any second, rate + 2 in any
  minute: the README promises rate/60 + 1, whose +1 evenly spaced starts already use up (21
  arrivals 50 ms apart fit in a second at 1200/min), and arrival jitter of one interval on a
  busy machine adds one more (`JITTER`); a second over the README's figure is listed in
  `notes`;
- the relay's memory in the kill-free tail grows by at most max(8 MB, 15 %) between its first
  and last third (after a warm-up): a leak of a few hundred bytes per event shows in a long
  run, a filling ring buffer or cache does not fail a short one.

`run_soak` is what tests/test_soak.py calls for the short version on both backends.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT, RelayProcess, Space, UpstreamProcess, write_config

TRACK = "/public-api/v1/events/track"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
REJECT = "soak-reject"  # profile_field_1 of the events the upstream refuses with 422
DUPLICATE = "soak-duplicate"  # profile_field_2 of resends the relay must drop as duplicates
FAULT_KINDS = ("500", "429", "drop", "slow")
CONVERSIONS = ("add_to_cart", "lead_generated", "initiate_checkout")
KILL_GRACE_AFTER = 1.0  # a request the killed relay sent may be read by the upstream this late
# Requests on top of the README's rate/60 + 1 a second (and rate + 1 a minute) that arrival
# jitter at the upstream may add: the +1 is already spent on the fencepost of evenly spaced
# starts (21 arrivals 50 ms apart fit in one second at 1200/min), so a request delayed by one
# interval on a busy machine makes it +2. Each such second is listed in the report's notes.
JITTER = 1
IN_FLIGHT = 0.5  # seconds after a 429 in which requests started before it may still arrive
HOLD_STORE_S = 0.2  # seconds after a 429 within which a kill may come before its hold is stored
MEMORY_SLACK_KB = 8 * 1024
MEMORY_SLACK_SHARE = 0.15

# What the load is made of: action -> weight.
MIX: dict[str, int] = {
    "browser_page_views": 40,
    "browser_conversion": 10,
    "browser_invalid": 5,
    "api_purchase": 18,
    "api_lead": 8,
    "api_reject": 4,
    "api_invalid": 5,
    "duplicate": 10,
}


@dataclass(frozen=True)
class SpacePlan:
    id: str
    upstream_rate: int  # upstream_rate_per_minute
    share: int  # of the load

    @property
    def token(self) -> str:
        return f"token-{self.id}"


SPACES = (SpacePlan("acme", 1200, 2), SpacePlan("beta", 600, 1))


@dataclass(frozen=True)
class Options:
    """One soak run. Times are seconds."""

    backend: str = "sqlite"
    seconds: float = 25.0  # of load, faults and kills
    kills: int = 2
    rate: float = 12.0  # load requests a second (a browser batch holds 1 to 3 events)
    fault_every: float = 3.0  # a fault spell starts every this many seconds
    fault_length: float = 1.2
    slow_delay: float = 0.5  # well under upstream_timeout: slow, not timed out
    retry_after: int = 2
    upstream_timeout: float = 3.0
    calm_tail: float = 0.4  # share of the run at its end without kills
    warm_up: float = 3.0  # seconds of a relay's life left out of the memory trend
    sample_every: float = 0.5
    drain_timeout: float = 240.0
    seed: int = 7


# --- the ledger of what the load sent -------------------------------------------------------


@dataclass
class Sent:
    """One event the load sent (with retries on connection errors until it got an answer)."""

    key: str
    space: str
    channel: str  # "api" or "browser"
    kind: str  # "page_view", "conversion" or "invalid"
    event: dict[str, Any]
    reject: bool = False  # marked for the upstream to refuse
    state: str = "pending"  # accepted, refused, or what else came back


@dataclass
class Ledger:
    events: dict[str, Sent] = field(default_factory=dict)
    resent: set[str] = field(default_factory=set)  # keys of the events resent as duplicates
    duplicates_sent: Counter[str] = field(default_factory=Counter)
    duplicates_replayed: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)  # by channel
    client_retries: Counter[str] = field(default_factory=Counter)  # by cause
    problems: list[str] = field(default_factory=list)

    def accepted(self, channel: str | None = None) -> list[Sent]:
        return [
            s
            for s in self.events.values()
            if s.state == "accepted" and (channel is None or s.channel == channel)
        ]


class Load:
    """Sends the mixed load to one relay URL; survives the relay's restarts by retrying."""

    def __init__(self, url: str, options: Options, ledger: Ledger) -> None:
        self.url = url
        self.options = options
        self.ledger = ledger
        self.rng = random.Random(options.seed)
        self.n = 0
        self.give_up_at = 0.0
        self.spaces = [p for p in SPACES for _ in range(p.share)]
        self.actions = list(MIX)
        self.weights = list(MIX.values())

    async def run(self, until: float) -> None:
        """Start one action every 1/rate s until `until` (Unix time); wait for them all."""
        self.give_up_at = until + 90.0
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with (
            httpx.AsyncClient(base_url=self.url, limits=limits, timeout=10) as api,
            httpx.AsyncClient(
                base_url=self.url, limits=limits, timeout=10, headers={"User-Agent": UA}
            ) as browser,
        ):
            tasks: set[asyncio.Task[None]] = set()
            interval = 1.0 / self.options.rate
            next_at = time.time()
            while next_at < until:
                action = self.rng.choices(self.actions, self.weights)[0]
                task = asyncio.create_task(self._act(action, api, browser))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.time()))
            if tasks:
                await asyncio.gather(*tasks)

    def _key(self, space: str, what: str) -> str:
        self.n += 1
        return f"{space}-{what}-{self.n}"

    async def _act(self, action: str, api: httpx.AsyncClient, browser: httpx.AsyncClient) -> None:
        plan = self.rng.choice(self.spaces)
        if action.startswith("browser_"):
            await self._browser(action, plan, browser)
        elif action == "duplicate":
            await self._duplicate(api, browser)
        else:
            await self._api(action, plan, api)

    # one request, retried until the relay answers -------------------------------------------

    async def _post(
        self, client: httpx.AsyncClient, path: str, channel: str, **kwargs: Any
    ) -> httpx.Response | None:
        """POST until an answer other than 5xx or 429 comes (the relay may be down), or give up."""
        while True:
            self.ledger.requests[channel] += 1
            try:
                answer = await client.post(path, **kwargs)
                if answer.status_code < 500 and answer.status_code != 429:
                    return answer
                cause = str(answer.status_code)
            except httpx.TransportError as exc:
                cause = type(exc).__name__
            self.ledger.client_retries[cause] += 1
            if time.time() > self.give_up_at:
                return None
            await asyncio.sleep(0.2)  # a client's retry delay while the relay restarts

    # the Create Event API -----------------------------------------------------------------------

    async def _api(self, action: str, plan: SpacePlan, api: httpx.AsyncClient) -> None:
        n = self.n + 1
        key = self._key(plan.id, "api")
        event: dict[str, Any]
        kind, reject = "conversion", False
        if action == "api_purchase":
            event = {
                "event_name": "purchase",
                "email": f"buyer{n}@soak.test",
                "amount": round(self.rng.uniform(5, 500), 2),
                "order_id": f"order-{n}",
                "url": f"https://{plan.id}.example/checkout/thanks",
                "comet_source": "google",
            }
        elif action == "api_lead":
            event = {
                "event_name": "lead_generated",
                "email": f"lead{n}@soak.test",
                "comet_campaign": "soak",
            }
        elif action == "api_reject":
            event = {
                "event_name": "lead_generated",
                "email": f"refused{n}@soak.test",
                "profile_field_1": REJECT,
            }
            reject = True
        else:  # invalid on purpose: each breaks one rule of the contract
            kind = "invalid"
            event = self.rng.choice(
                [
                    {"event_name": "purchase", "email": f"x{n}@soak.test", "value": 10},
                    {"event_name": "purchase", "amount": 3},
                    {"event_name": "no_such_event", "email": f"x{n}@soak.test"},
                    {"event_name": "purchase", "email": f"x{n}@soak.test", "amount": "12"},
                ]
            )
        event["idempotency_key"] = key
        sent = Sent(key, plan.id, "api", kind, event, reject)
        self.ledger.events[key] = sent
        answer = await self._post(
            api, TRACK, "api", json=event, headers={"Authorization": f"Bearer key-{plan.id}-write"}
        )
        sent.state = _state(answer)

    # the browser endpoint -----------------------------------------------------------------------

    async def _browser(self, action: str, plan: SpacePlan, browser: httpx.AsyncClient) -> None:
        batch: list[Sent] = []
        for _ in range(self.rng.randint(1, 3) if action == "browser_page_views" else 1):
            batch.append(self._page_view(plan))
        if action == "browser_conversion":
            key = self._key(plan.id, "web")
            event = {
                "event_name": self.rng.choice(CONVERSIONS),
                "event_id": key,
                "url": f"https://{plan.id}.example/cart?utm_source=google&utm_campaign=soak",
                "amount": round(self.rng.uniform(5, 100), 2),
            }
            batch.append(Sent(key, plan.id, "browser", "conversion", event))
        elif action == "browser_invalid":
            key = self._key(plan.id, "web")
            event = self.rng.choice(
                [
                    {"event_name": "no_such_event", "event_id": key},
                    {"event_name": "view_content", "event_id": key, "amount": "12"},
                    {"event_name": "view_content", "event_id": key, "url": "not a url"},
                ]
            )
            batch.append(Sent(key, plan.id, "browser", "invalid", event))
        for sent in batch:
            self.ledger.events[sent.key] = sent
        answer = await self._send_batch(browser, plan.id, [s.event for s in batch])
        if answer is None or answer.status_code != 202:
            for sent in batch:
                sent.state = _state(answer)
            return
        refused = {item["index"] for item in answer.json()["refused"]}
        for index, sent in enumerate(batch):
            sent.state = "refused" if index in refused else "accepted"

    def _page_view(self, plan: SpacePlan) -> Sent:
        key = self._key(plan.id, "web")
        page = self.rng.randint(1, 500)
        event = {
            "event_name": "view_content",
            "event_id": key,
            "fingerprint": f"fp-{page % 37}",
            "url": f"https://{plan.id}.example/p/{page}?utm_source=google&utm_medium=cpc",
        }
        return Sent(key, plan.id, "browser", "page_view", event)

    async def _send_batch(
        self, browser: httpx.AsyncClient, space: str, events: list[dict[str, Any]]
    ) -> httpx.Response | None:
        return await self._post(
            browser,
            f"/e?k=pk_{space}",
            "browser",
            content=json.dumps({"e": events}),
            headers={"Origin": f"https://{space}.example", "Content-Type": "text/plain"},
        )

    # resends the relay must recognise ----------------------------------------------------------

    async def _duplicate(self, api: httpx.AsyncClient, browser: httpx.AsyncClient) -> None:
        accepted = self.ledger.accepted()
        if not accepted:
            return
        original = self.rng.choice(accepted)
        self.ledger.resent.add(original.key)
        copy = {**original.event, "profile_field_2": DUPLICATE}
        if original.channel == "browser":
            how = "browser event_id"
            self.ledger.duplicates_sent[how] += 1
            answer = await self._send_batch(browser, original.space, [copy])
            body = answer.json() if answer is not None and answer.status_code == 202 else {}
            replayed = body.get("duplicates") == 1 and body.get("accepted") == 0
        else:
            how = "api idempotency_key"
            if "order_id" in copy and self.rng.random() < 0.5:
                how = "api event_name + order_id"
                copy["idempotency_key"] = f"{original.key}-again"  # a stray if it gets through
            self.ledger.duplicates_sent[how] += 1
            answer = await self._post(
                api,
                TRACK,
                "api",
                json=copy,
                headers={"Authorization": f"Bearer key-{original.space}-write"},
            )
            replayed = (
                answer is not None
                and answer.status_code == 202
                and answer.headers.get("Idempotent-Replayed") == "true"
            )
        if replayed:
            self.ledger.duplicates_replayed[how] += 1
        else:
            shown = "no answer" if answer is None else f"{answer.status_code} {answer.text[:200]}"
            self.ledger.problems.append(
                f"resend of {original.key} ({how}) not deduplicated: {shown}"
            )


def _state(answer: httpx.Response | None) -> str:
    if answer is None:
        return "unanswered"
    return {202: "accepted", 422: "refused"}.get(answer.status_code, f"http {answer.status_code}")


# --- the schedule ---------------------------------------------------------------------------


def fault_schedule(options: Options, t0: float) -> list[dict[str, Any]]:
    """Fault spells over the load phase, the kinds in turn: [{start, end, kind, rule}]."""
    rules: dict[str, dict[str, Any]] = {
        "500": {"status": 500},
        "429": {"status": 429, "retry_after": str(options.retry_after)},
        "drop": {"drop": True},
        "slow": {"delay": options.slow_delay},
    }
    spells = []
    i = 0
    while (start := options.fault_every * (i + 0.5)) + options.fault_length <= options.seconds:
        kind = FAULT_KINDS[i % len(FAULT_KINDS)]
        spells.append(
            {
                "start": t0 + start,
                "end": t0 + start + options.fault_length,
                "kind": kind,
                "rule": rules[kind],
            }
        )
        i += 1
    return spells


def program_upstream(upstream: UpstreamProcess, spells: list[dict[str, Any]]) -> None:
    """Give the fake upstream its fault spells, and a 422 for every event marked REJECT."""
    refuse = {"status": 422, "message": "refused on purpose"}
    body = {
        "schedule": [{k: s[k] for k in ("start", "end", "rule")} for s in spells],
        "match": [{"contains": REJECT, "rule": refuse}],
    }
    httpx.post(f"{upstream.url}/_control", json=body, timeout=10).raise_for_status()


def kill_times(options: Options) -> list[float]:
    """Seconds into the run of each SIGKILL: evenly over the part before the calm tail."""
    span = options.seconds * (1.0 - options.calm_tail)
    return [span * (i + 1) / (options.kills + 1) for i in range(options.kills)]


# --- chaos and memory -----------------------------------------------------------------------


@dataclass
class Chaos:
    kills: list[float] = field(default_factory=list)  # Unix time just before each SIGKILL
    restart_seconds: list[float] = field(default_factory=list)
    lives: list[tuple[float, int]] = field(default_factory=list)  # (ready at, pid) per process
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (time, pid, kB)


async def kill_and_restart(
    relay: RelayProcess, at: Sequence[float], t0: float, chaos: Chaos
) -> None:
    for offset in at:
        await asyncio.sleep(max(0.0, t0 + offset - time.time()))
        chaos.kills.append(time.time())
        await asyncio.to_thread(relay.kill)
        began = time.time()
        await asyncio.to_thread(relay.start, 90.0)
        chaos.lives.append((time.time(), _pid(relay)))
        chaos.restart_seconds.append(round(time.time() - began, 2))


def _pid(relay: RelayProcess) -> int:
    assert relay.proc is not None  # only called on a started relay
    return relay.proc.pid


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def sample_memory(
    relay: RelayProcess, chaos: Chaos, every: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        proc = relay.proc
        if proc is not None and proc.poll() is None:
            kb = rss_kb(proc.pid)
            if kb is not None:
                chaos.rss.append((time.time(), proc.pid, kb))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def memory_trend(chaos: Chaos, load_end: float, warm_up: float) -> dict[str, Any]:
    """The last process's RSS over the load, after its warm-up: first third vs last third."""
    born, last_pid = chaos.lives[-1]
    samples = [
        kb for t, pid, kb in chaos.rss if pid == last_pid and born + warm_up <= t <= load_end
    ]
    lives = []
    for _, life_pid in chaos.lives:
        kbs = [kb for _, pid, kb in chaos.rss if pid == life_pid]
        if kbs:
            lives.append(
                {
                    "samples": len(kbs),
                    "first_mb": _mb(kbs[0]),
                    "median_mb": _mb(statistics.median(kbs)),
                    "peak_mb": _mb(max(kbs)),
                }
            )
    trend: dict[str, Any] = {
        "lives": lives,
        "samples": len(samples),
        "seconds": round(load_end - born - warm_up, 1),
    }
    if len(samples) < 6:
        trend["flat"] = None
        return trend
    third = len(samples) // 3
    first, last = statistics.median(samples[:third]), statistics.median(samples[-third:])
    allowed = max(MEMORY_SLACK_KB, MEMORY_SLACK_SHARE * first)
    trend.update(
        first_third_mb=_mb(first),
        last_third_mb=_mb(last),
        growth_mb=_mb(last - first),
        allowed_growth_mb=_mb(allowed),
        flat=last - first <= allowed,
    )
    return trend


def _mb(kb: float) -> float:
    return round(kb / 1024, 1)


# --- the upstream's record ------------------------------------------------------------------


def busiest(times: Sequence[float], width: float) -> list[float]:
    """The most of `times` that fit in one half-open window [t, t + width), in order."""
    ordered = sorted(times)
    best: list[float] = []
    for i, t in enumerate(ordered):
        end = bisect.bisect_left(ordered, t + width)
        if end - i > len(best):
            best = ordered[i:end]
    return best


def fault_kind(record: dict[str, Any]) -> str | None:
    if record["status"] == "dropped":
        return "drop"
    if record.get("delay"):
        return "slow"
    if record["status"] in (500, 429):
        return str(record["status"])
    return None


def near_kill(at: float, kills: Sequence[float], grace: float) -> float | None:
    """The kill (seconds after `at`) that can explain a delivery at `at` being sent again."""
    for k in kills:
        if k - grace <= at <= k + KILL_GRACE_AFTER:
            return round(k - at, 2)
    return None


# --- one run --------------------------------------------------------------------------------


def relay_config(
    directory: Path, upstream: UpstreamProcess, database: str, options: Options
) -> Path:
    spaces = [
        Space(
            plan.id,
            {f"key-{plan.id}-write": ["events:write"]},
            (
                f'upstream_url = "{upstream.track_url}"\n'
                f'upstream_token_env = "SOAK_TOKEN_{plan.id.upper()}"\n'
                f"upstream_rate_per_minute = {plan.upstream_rate}\n"
                "rate_limit_per_minute = 1000000\n"
            ),
        )
        for plan in SPACES
    ]
    relay_extra = (
        f"upstream_timeout_seconds = {options.upstream_timeout}\n"
        "browser_rate_limit_per_minute = 1000000"
    )
    config = write_config(directory, spaces, relay_extra)
    text = config.read_text().replace('database = "relay.db"', f"database = {json.dumps(database)}")
    config.write_text(text)
    return config


def outbox_cli(config: Path, *args: str) -> Any:
    cmd = [sys.executable, "-m", "relay.cli", "outbox", *args, "--json", "--config", str(config)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def queued(relay: RelayProcess) -> int | None:
    try:
        return int(httpx.get(f"{relay.url}/healthz", timeout=5).json()["queued"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


async def drain(relay: RelayProcess, timeout: float) -> float:
    """Poll until the relay's outbox holds nothing queued; the seconds it took."""
    began = time.time()
    while True:
        left = await asyncio.to_thread(queued, relay)
        if left == 0:
            return round(time.time() - began, 1)
        if time.time() - began > timeout:
            raise TimeoutError(f"{left} events still queued {timeout:.0f} s after the load ended")
        await asyncio.sleep(0.5)  # polling the queue depth, with the deadline above


def run_soak(options: Options, directory: Path, database: str = "relay.db") -> dict[str, Any]:
    """One soak in `directory` (its relay.toml, logs, SQLite file); returns the report."""
    with UpstreamProcess(directory) as upstream:
        config = relay_config(directory, upstream, database, options)
        env = {f"SOAK_TOKEN_{p.id.upper()}": p.token for p in SPACES}
        relay = RelayProcess(config, env=env)
        try:
            relay.start(90.0)
            return asyncio.run(_soak(options, relay, upstream, config))
        finally:
            relay.kill()


async def _soak(
    options: Options, relay: RelayProcess, upstream: UpstreamProcess, config: Path
) -> dict[str, Any]:
    chaos = Chaos(lives=[(time.time(), _pid(relay))])
    ledger = Ledger()
    t0 = time.time() + 0.5
    spells = fault_schedule(options, t0)
    await asyncio.to_thread(program_upstream, upstream, spells)
    load = Load(relay.url, options, ledger)
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(relay, chaos, options.sample_every, stop_sampling))
    await asyncio.sleep(max(0.0, t0 - time.time()))
    await asyncio.gather(
        load.run(until=t0 + options.seconds),
        kill_and_restart(relay, kill_times(options), t0, chaos),
    )
    load_end = time.time()
    drain_seconds = await drain(relay, options.drain_timeout)
    stop_sampling.set()
    await sampler
    if relay.stop() not in (0, -signal.SIGTERM):  # uvicorn re-raises the signal it handled
        ledger.problems.append(f"the relay did not stop cleanly on SIGTERM (log: {relay.log})")
    stats = await asyncio.to_thread(outbox_cli, config, "stats")
    dead = await asyncio.to_thread(outbox_cli, config, "dead", "--limit", "1000000")
    records = await asyncio.to_thread(upstream.received)
    (relay.config.parent / "upstream-records.json").write_text(json.dumps(records))
    report = judge(options, ledger, chaos, records, stats, dead)
    report["run"].update(
        load_seconds=round(load_end - t0, 1),
        drain_seconds=drain_seconds,
        relay_log=str(relay.log),
        upstream_log=str(upstream.log),
    )
    report["memory"] = memory_trend(chaos, load_end, options.warm_up)
    if report["memory"]["flat"] is False:
        report["problems"].append(
            f"the relay's memory grew by {report['memory']['growth_mb']} MB over the calm tail "
            f"(allowed {report['memory']['allowed_growth_mb']} MB)"
        )
    elif report["memory"]["flat"] is None:
        report["problems"].append("too few memory samples in the calm tail to judge its trend")
    return report


def judge(
    options: Options,
    ledger: Ledger,
    chaos: Chaos,
    records: list[dict[str, Any]],
    stats: dict[str, Any],
    dead: list[dict[str, Any]],
) -> dict[str, Any]:
    """Hold the run against every promise; the report with its `problems`."""
    problems = list(ledger.problems)
    sent = ledger.events
    accepted = {s.key for s in ledger.accepted()}
    rejected = {k for k in accepted if sent[k].reject}
    refused = {s.key for s in sent.values() if s.state == "refused"}
    wrong = [
        s for s in sent.values() if s.state != ("refused" if s.kind == "invalid" else "accepted")
    ]
    for s in wrong[:10]:
        problems.append(f"{s.channel} event {s.key} ({s.kind}) ended {s.state}")
    if len(wrong) > 10:
        problems.append(f"... and {len(wrong) - 10} more events with an unexpected answer")

    token_space = {f"Bearer {p.token}": p.id for p in SPACES}
    bodies = [json.loads(r["body"]) for r in records]
    keys = [str(b.get("idempotency_key")) for b in bodies]
    delivered: Counter[str] = Counter(k for k, r in zip(keys, records) if r["status"] == 202)
    refused_upstream = {k for k, r in zip(keys, records) if r["status"] == 422}

    # accepted = delivered + dead, by the upstream and by the outbox
    lost = accepted - set(delivered) - refused_upstream
    if lost:
        problems.append(
            f"{len(lost)} accepted events never reached the upstream: {sorted(lost)[:5]}"
        )
    if refused_upstream != rejected:
        problems.append(
            f"the upstream refused {len(refused_upstream)} events, "
            f"{len(rejected)} were marked for it"
        )
    dead_keys = {d["idempotency_key"] for d in dead}
    if dead_keys != rejected or any(d["last_status"] != 422 for d in dead):
        problems.append(
            f"dead letters {sorted(dead_keys ^ rejected)[:5]} differ from the events "
            f"the upstream refused; statuses {Counter(d['last_status'] for d in dead)}"
        )
    for plan in SPACES:
        counts = stats["spaces"].get(plan.id, {})
        mine = {k for k in accepted if sent[k].space == plan.id}
        want = {"queued": 0, "delivered": len(mine - rejected), "dead": len(mine & rejected)}
        got = {k: counts.get(k, 0) for k in want}
        if got != want:
            problems.append(f"Space {plan.id}: outbox stats {got}, expected {want}")

    # nothing refused or deduplicated gets through; what gets through is what was accepted
    strays = set(keys) - accepted
    if strays:
        problems.append(
            f"{len(strays)} events the relay did not accept reached the upstream: "
            f"{sorted(strays)[:5]}"
        )
    marked = sum(1 for b in bodies if b.get("profile_field_2") == DUPLICATE)
    if marked:
        problems.append(
            f"{marked} resends the relay acknowledged as duplicates reached the upstream"
        )
    altered = sorted(
        {
            k
            for k, b in zip(keys, bodies)
            if k in sent and sent[k].channel == "api" and b != sent[k].event
        }
    )
    if altered:
        problems.append(f"{len(altered)} API events reached the upstream changed: {altered[:5]}")
    unenriched = sorted(
        {
            k
            for k, b in zip(keys, bodies)
            if k in sent and sent[k].channel == "browser" and not _enriched(b, sent[k].event)
        }
    )
    if unenriched:
        problems.append(
            f"{len(unenriched)} browser events lack what the relay sets: {unenriched[:5]}"
        )

    # duplicates at the upstream: only a delivery the kill kept from being marked is sent again
    grace = options.slow_delay + options.upstream_timeout
    repeats = []
    for key in (k for k, n in delivered.items() if n > 1):
        times = sorted(r["at"] for k, r in zip(keys, records) if k == key and r["status"] == 202)
        for at in times[:-1]:
            before = near_kill(at, chaos.kills, grace)
            repeats.append(
                {
                    "key": key,
                    "at": round(at - chaos.lives[0][0], 2),
                    "kill_after_s": before,
                    "around_kill": before is not None,
                }
            )
    unexplained = [r for r in repeats if not r["around_kill"]]
    if unexplained:
        problems.append(
            f"{len(unexplained)} upstream duplicates not around a kill: {unexplained[:5]}"
        )

    # no Space over its rate
    rates = {}
    notes: list[str] = []
    for plan in SPACES:
        times = [r["at"] for r in records if token_space.get(r["authorization"]) == plan.id]
        second, per_minute = busiest(times, 1.0), len(busiest(times, 60.0))
        per_second = len(second)
        readme_second, readme_minute = plan.upstream_rate // 60 + 1, plan.upstream_rate + 1
        allowed_second, allowed_minute = readme_second + JITTER, readme_minute + JITTER
        began = chaos.lives[0][0]
        rates[plan.id] = {
            "requests": len(times),
            "rate_per_minute": plan.upstream_rate,
            "max_per_second": per_second,
            "readme_per_second": readme_second,
            "allowed_per_second": allowed_second,
            "max_per_minute": per_minute,
            "allowed_per_minute": allowed_minute,
            "span_seconds": round(max(times) - min(times), 1) if times else 0,
            # where the busiest second was, and how its arrivals were spaced
            "busiest_second_at": round(second[0] - began, 2) if second else None,
            "busiest_second_gaps_ms": [round((b - a) * 1000) for a, b in pairwise(second)],
            "kills_at": [round(k - began, 2) for k in chaos.kills],
        }
        if per_second > allowed_second or per_minute > allowed_minute:
            problems.append(f"Space {plan.id} over its rate: {rates[plan.id]}")
        elif per_second > readme_second or per_minute > readme_minute:
            notes.append(
                f"Space {plan.id}: {per_second} arrivals in one second, {per_minute} in one minute "
                f"(README: at most {readme_second} and {readme_minute}; within the allowance for "
                f"arrival jitter): {rates[plan.id]}"
            )

    held = retry_after_kept(options, chaos, records, token_space)
    for miss in held:
        if miss["killed_before_stored"]:
            notes.append(f"a 429's Retry-After died with a kill before it was stored: {miss}")
        else:
            problems.append(f"a 429's Retry-After was not kept: {miss}")

    faults = Counter(kind for r in records if (kind := fault_kind(r)))
    missing = [k for k in FAULT_KINDS if not faults[k]]
    if missing:
        problems.append(f"fault kinds never injected (no request met their spell): {missing}")
    if len(chaos.kills) < options.kills:
        problems.append(f"{len(chaos.kills)} kills of {options.kills}")

    by_kind = Counter(f"{s.channel} {s.kind}" for s in sent.values())
    return {
        "run": {
            "backend": options.backend,
            "options": asdict(options),
            "kills": len(chaos.kills),
            "restart_seconds": chaos.restart_seconds,
        },
        "sent": {
            "events": len(sent),
            "by_kind": dict(sorted(by_kind.items())),
            "requests": dict(ledger.requests),
            "client_retries": dict(ledger.client_retries),
        },
        "accepted": len(accepted),
        "refused": len(refused),
        "duplicates": {
            "sent": sum(ledger.duplicates_sent.values()),
            "replayed": sum(ledger.duplicates_replayed.values()),
            "by_how": dict(ledger.duplicates_sent),
        },
        "delivered": len(delivered),
        "dead": len(dead_keys),
        "outbox": {
            "delivered": stats["delivered"],
            "dead": stats["dead"],
            "queued": stats["queued"],
        },
        "lost": len(lost),
        "upstream": {
            "requests": len(records),
            "faults": dict(faults),
            "refused_422": sum(1 for r in records if r["status"] == 422),
            "unanswered": sum(1 for r in records if r.get("answered") is False),
            "duplicates": repeats,
            "duplicates_of_resent_keys": sum(1 for r in repeats if r["key"] in ledger.resent),
        },
        "rates": rates,
        "retry_after_not_kept": held,
        "problems": problems,
        "notes": notes,
    }


def retry_after_kept(
    options: Options, chaos: Chaos, records: list[dict[str, Any]], token_space: dict[str, str]
) -> list[dict[str, Any]]:
    """Each 429 after which its Space's upstream saw a new request before Retry-After passed.

    Requests already in flight when the 429 was answered may arrive a little after it, so the
    first IN_FLIGHT seconds are not counted; `killed_before_stored` tells a hold that died
    with a process killed right after the 429 (before the pacer stored it) from one ignored.
    """
    began = chaos.lives[0][0]
    missed = []
    for space in token_space.values():
        mine = sorted(
            (r["at"], r["status"]) for r in records if token_space.get(r["authorization"]) == space
        )
        times = [at for at, _ in mine]
        for at, status in mine:
            if status != 429:
                continue
            early = times[
                bisect.bisect_right(times, at + IN_FLIGHT) : bisect.bisect_left(
                    times, at + options.retry_after - 0.1
                )
            ]
            if early:
                missed.append(
                    {
                        "space": space,
                        "at": round(at - began, 2),
                        "early_requests": len(early),
                        "first_after_s": round(early[0] - at, 2),
                        "killed_before_stored": any(
                            at - 0.1 <= k <= at + HOLD_STORE_S for k in chaos.kills
                        ),
                    }
                )
    return missed


def _enriched(body: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Whether a browser event reached the upstream with what only the relay sets."""
    ok = body.get("user_agent") == UA and bool(body.get("comet_token"))
    ok = ok and body.get("comet_source") == "google"
    return ok and ("fingerprint" not in sent or body.get("ip") == "127.0.0.1")


# --- the command ----------------------------------------------------------------------------


@contextlib.contextmanager
def database_for(backend: str, directory: Path) -> Iterator[str]:
    """The `database` setting: the SQLite file, or a redis-server of our own for the run."""
    if backend == "sqlite":
        yield "relay.db"
        return
    from tests.redis_server import RedisServer

    with RedisServer(directory / "redis") as server:
        yield server.url


def summary(report: dict[str, Any]) -> str:
    """The report as a few readable lines."""
    run, up, mem = report["run"], report["upstream"], report["memory"]
    rates = "; ".join(
        f"{sid}: {r['max_per_second']}/s (README {r['readme_per_second']}, "
        f"allowed {r['allowed_per_second']}), "
        f"{r['max_per_minute']}/min (allowed {r['allowed_per_minute']})"
        for sid, r in report["rates"].items()
    )
    around = sum(1 for d in up["duplicates"] if d["around_kill"])
    sent, dup = report["sent"], report["duplicates"]
    lines = [
        (
            f"soak on {run['backend']}: {run['load_seconds']} s of load, drained in "
            f"{run['drain_seconds']} s; {run['kills']} SIGKILLs "
            f"(restarts took {run['restart_seconds']} s)"
        ),
        (
            f"sent {sent['events']} events in {sum(sent['requests'].values())} requests: "
            f"{report['accepted']} accepted, {report['refused']} refused (invalid on purpose), "
            f"{dup['sent']} resends of which {dup['replayed']} replayed"
        ),
        (
            f"delivered {report['delivered']} + dead {report['dead']} (all upstream 422) = "
            f"{report['delivered'] + report['dead']}; lost {report['lost']}"
        ),
        (
            f"upstream: {up['requests']} requests, faults {up['faults']}, "
            f"{len(up['duplicates'])} duplicates ({around} around a kill)"
        ),
        f"busiest: {rates}",
        (
            f"memory (last life, {mem['seconds']} s after warm-up): "
            f"{mem.get('first_third_mb')} -> {mem.get('last_third_mb')} MB "
            f"(allowed +{mem.get('allowed_growth_mb')} MB); lives {mem['lives']}"
        ),
        *(f"note: {note}" for note in report["notes"]),
        "problems: "
        + ("none" if not report["problems"] else "\n  " + "\n  ".join(report["problems"])),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--rate", type=float, default=Options.rate, help="load requests a second")
    parser.add_argument("--seed", type=int, default=Options.seed)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs)")
    parser.add_argument("--out", help="the JSON report (default bench/results/soak-BACKEND.json)")
    args = parser.parse_args()
    options = Options(
        backend=args.backend, seconds=args.seconds, kills=args.kills, rate=args.rate, seed=args.seed
    )
    directory = Path(tempfile.mkdtemp(prefix="comet-soak-"))
    with database_for(args.backend, directory) as database:
        report = run_soak(options, directory, database)
    out = Path(args.out or ROOT / "bench" / "results" / f"soak-{args.backend}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"report: {out}" + (f"; logs in {directory}" if args.keep else ""))
    if not args.keep and not report["problems"]:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    sys.exit(1 if report["problems"] else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
