"""Soak and chaos: mixed load on a relay while its upstream fails and the relay is SIGKILLed.

For `--seconds` a load generator sends, to a real `comet-relay serve` process, a mix of
browser batches (`POST /e`: page views, conversions, now and then an invalid event) and
Create Event API calls (purchases, leads, invalid events, events the upstream will refuse),
plus resends of events already acknowledged (same idempotency key, same event id, or the same
purchase's order id under a new key), each resend marked so it can be told apart upstream.

It also sends twins, the trust tiers' cases (SECURITY.md, "Trust tiers"), each Space's
`twin_window_seconds` being `twin_window` (2 s): a forged browser purchase (amount 0.01, an
email and campaign of its own, from an address of its own behind the trusted loopback proxy)
claiming the key, or the order under a key of its own, of an API purchase sent within
`twin_gap` s of its answer; the thank-you page's purchase (same key, the visit: page,
campaign, fingerprint) before or after the backend's (the money); late twins, sent at least
`late_after` s after their partner was answered: a browser purchase with the key or order of
an API purchase, an API event with the key of a browser conversion. And every `flood_every`
s, to each Space in turn, a flood: forged purchases worth `flood_seconds` of its upstream
rate, in one batch from each of `flood_addresses` new addresses at once.

Every event carries its ledger id in `ID_FIELD`, so each request the upstream records names
the event it carries (a merged pair carries its API side's: a merge takes no profile field).
Meanwhile `tests/fake_upstream.py` fails on a schedule (spells of 500s, 429 with Retry-After,
dropped connections and slow answers, in turn), answers 422 to every event marked to be
refused, and the relay is SIGKILLed `--kills` times and started again on the same data. The
last part of the run (`--calm-tail`) has no kill, so the relay's memory can be followed over
one process's life. Then faults stop, the backlog drains (held conversions count as queued,
so the drain waits for their window too), the relay stops, and the outbox is read with
`comet-relay outbox stats` and `outbox dead`.

    python -m bench.soak --backend sqlite|redis --seconds 300 --kills 6 [--rate 12]

The report (printed as a table, written to bench/results/soak-BACKEND.json) holds what was
sent, accepted, merged, refused, deduplicated, delivered and dead, the twins and floods, the
kills and the faults by kind, the upstream's duplicates with the kill each one follows, the
busiest second and minute per Space against its rate, and the relay's resident memory over
time; `problems` lists every broken promise (exit status 1 when there is one):

- accepted = merged into an API twin + browser twins' duplicates + delivered + dead, by the
  relay's outbox and by the upstream's own record; dead are exactly the events the upstream
  refused with a 4xx; no accepted event is lost;
- nothing refused or deduplicated by the relay ever reaches the upstream; an API event
  reaches it exactly as accepted, or, if its browser twin merged into it, with exactly that
  twin's visit in the fields it left out (FILLED_BY_BROWSER, fingerprint with ip) and on a
  delivered request at least once; a browser event exactly as sent, with what only the relay
  sets; a browser twin that merged or was a duplicate never on its own;
- no request the upstream gets carries a forged amount for a key or an order that an API
  event also had, unless the API's answer came after the forged one's twin window (listed in
  `notes`: the contract sends a browser event whose window passed);
- the relay's answers: an API event is never a duplicate on its first try (only an earlier
  API event may make it one: a retry after a kill may find its own first try); twins whose
  second came inside the first one's window merged ("merged", with the right key); a late
  browser twin is never queued beside its API event, and is a duplicate once the upstream has
  its partner (by its record, no kill near); a late API twin of a delivered browser event is
  queued and sent too;
- floods: once an API conversion is due (its answer + the twin window at the latest), at
  most a claim batch and the requests in flight (`IN_FLIGHT_REQUESTS`) of flood purchases
  reach the upstream ahead of it, by the upstream's order of arrival (conversions whose wait
  held a kill are not judged); the report counts those that went ahead of forged ones queued
  before them;
- the upstream sees an event twice only when its first delivery came just before a kill;
- after a 429 the Space's upstream sees no new request until Retry-After has passed, a kill
  and restart included (the hold is stored with the outbox; only a kill within
  `HOLD_STORE_S` of the 429, before the hold can be stored, makes a miss a note);
- no Space's forwarders start more than rate/60 + 1 requests in any second, rate + 1 in any
  minute (the README's promise; its +1 evenly spaced starts already use up: 21 starts 50 ms
  apart fit in a second at 1200/min), judged by the relay's own start times (`started_at` in
  its JSON event log, over every life). The arrivals at the upstream are reported beside
  them: a machine that stalls a process delivers several requests at once, which says
  nothing of the pace kept, so arrivals over rate/60 + 2 (`JITTER`) are only noted. Holds
  only delay: they never let the forwarder start faster;
- the relay's memory in the kill-free tail grows by at most max(8 MB, 15 %) between its first
  and last third (after a warm-up): a leak of a few hundred bytes per event shows in a long
  run, a filling ring buffer or cache does not fail a short one.

`run_soak` is what tests/test_soak.py calls for the short version on both backends. The run's
directory keeps `upstream-records.json` and `ledger.json` (every event sent, its answer).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
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
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support import ROOT, RelayProcess, Space, UpstreamProcess, write_config

TRACK = "/public-api/v1/events/track"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
REJECT = "soak-reject"  # profile_field_1 of the events the upstream refuses with 422
DUPLICATE = "soak-duplicate"  # profile_field_2 of resends the relay must drop as duplicates
# profile_field_3 of every event: its id in the ledger, so each request the upstream records
# names the one event sent that it carries (twins share a key; a merged pair carries the id of
# its API side, since a merge never takes a browser's profile fields).
ID_FIELD = "profile_field_3"
FORGED_AMOUNT = 0.01  # the amount of every forged browser purchase (no API purchase has it)
FORGED_EMAIL = "forger@evil.example"
FORGER_UA = "Mozilla/5.0 (forger)"
# What a browser twin may add to its API twin, where the API event left the field out
# (docs/CONTRACT.md, "Duplicates"), written out here rather than imported, so that the soak
# holds the relay to the documented list: fingerprint and ip only together, never an amount,
# an order, a time, a profile field or a key.
FILLED_BY_BROWSER = (
    "comet_token", "user_agent", "url", "comet_source", "comet_network", "comet_campaign",
    "comet_ad_group", "comet_ad_id", "comet_keyword", "comet_type", "email", "phone",
    "full_name", "first_name", "last_name",
)
UTM = {"utm_source": "comet_source", "utm_medium": "comet_type", "utm_campaign": "comet_campaign",
       "utm_term": "comet_keyword", "utm_content": "comet_ad_id"}
# The forwarder keeps up to 16 requests in flight per Space and claims rate/240 events at a
# time (at most 20; relay/delivery/forwarder.py): all that may still reach the upstream ahead
# of an API conversion once it is due, whatever else is queued.
IN_FLIGHT_REQUESTS = 16
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
    "browser_page_views": 34,
    "browser_conversion": 9,
    "browser_invalid": 4,
    "api_purchase": 14,
    "api_lead": 7,
    "api_reject": 4,
    "api_invalid": 4,
    "duplicate": 8,
    # twins: a browser purchase and an API purchase of the same key or order
    "twin_forged_key": 3,  # a forger claims the key of an API purchase sent just after
    "twin_forged_order": 3,  # ... or its order, under a key of its own
    "twin_browser_first": 3,  # the thank-you page's purchase, then the backend's
    "twin_api_first": 3,  # the backend's purchase, then the thank-you page's
    "late_browser_twin": 2,  # a browser twin of an API purchase answered seconds ago
    "late_api_twin": 2,  # an API twin of a browser conversion answered seconds ago
}
TWINS = ("twin_forged_key", "twin_forged_order", "twin_browser_first", "twin_api_first")


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
    twin_window: float = 2.0  # each Space's twin_window_seconds: conversions wait this long
    twin_gap: float = 0.5  # at most this long between a twin's two requests
    late_after: float = 6.0  # a late twin follows an event answered at least this long ago
    flood_every: float = 20.0  # a flood of forged purchases, to each Space in turn
    flood_seconds: float = 4.0  # a flood holds this many seconds of its Space's upstream rate
    flood_addresses: int = 6  # ... sent from this many client addresses at once


# --- the ledger of what the load sent -------------------------------------------------------


@dataclass
class Sent:
    """One event the load sent (with retries on connection errors until it got an answer)."""

    id: str  # in the ledger, and in the event's ID_FIELD
    key: str  # its idempotency key (an API event's) or event id (a browser event's)
    space: str
    channel: str  # "api" or "browser"
    kind: str  # "page_view", "conversion" or "invalid"
    event: dict[str, Any]
    reject: bool = False  # marked for the upstream to refuse
    # "" (plain), "forged" or "visit" (the browser side of a twin pair), "money" (the API side),
    # "late_browser", "late_api" (a twin sent seconds after its partner), "flood"
    role: str = ""
    partner: str | None = None  # the id of its twin
    address: str = "127.0.0.1"  # the client address the relay sees (X-Forwarded-For)
    ua: str = UA
    state: str = "pending"  # accepted, refused, or what else came back
    outcome: str = ""  # accepted, merged or duplicate: what the relay said became of it
    other: str | None = None  # the key it merged with, or is a duplicate of
    attempts: int = 0  # requests until an answer (the relay may have been down)
    first_sent_at: float = 0.0
    answered_at: float = 0.0


@dataclass
class Ledger:
    events: dict[str, Sent] = field(default_factory=dict)
    resent: set[str] = field(default_factory=set)  # ids of the events resent as duplicates
    duplicates_sent: Counter[str] = field(default_factory=Counter)
    duplicates_replayed: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)  # by channel
    client_retries: Counter[str] = field(default_factory=Counter)  # by cause
    floods: list[dict[str, Any]] = field(default_factory=list)
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
        self.addresses = 0  # forgers' addresses handed out

    async def run(self, until: float, t0: float) -> None:
        """Start one action every 1/rate s until `until` (Unix time), and a flood every
        `flood_every` s from `t0`; wait for them all."""
        self.give_up_at = until + 90.0
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with (
            httpx.AsyncClient(base_url=self.url, limits=limits, timeout=10) as api,
            httpx.AsyncClient(
                base_url=self.url, limits=limits, timeout=10, headers={"User-Agent": UA}
            ) as browser,
            httpx.AsyncClient(  # a cookie jar of its own: forgers are other visitors
                base_url=self.url, limits=limits, timeout=10, headers={"User-Agent": FORGER_UA}
            ) as forger,
        ):
            self.api, self.browser, self.forger = api, browser, forger
            floods = asyncio.create_task(self._floods(t0, until))
            tasks: set[asyncio.Task[None]] = set()
            interval = 1.0 / self.options.rate
            next_at = time.time()
            while next_at < until:
                action = self.rng.choices(self.actions, self.weights)[0]
                task = asyncio.create_task(self._act(action))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.time()))
            await floods
            if tasks:
                await asyncio.gather(*tasks)

    def _key(self, space: str, what: str) -> str:
        self.n += 1
        return f"{space}-{what}-{self.n}"

    def _new(
        self, plan: SpacePlan, what: str, channel: str, kind: str, event: dict[str, Any],
        key: str | None = None, **more: Any,
    ) -> Sent:
        """A new event in the ledger, its id in ID_FIELD, its own key unless given one."""
        sid = self._key(plan.id, what)
        key = key or sid
        event = {**event, ("idempotency_key" if channel == "api" else "event_id"): key}
        event[ID_FIELD] = sid
        sent = Sent(sid, key, plan.id, channel, kind, event, **more)
        self.ledger.events[sid] = sent
        return sent

    async def _act(self, action: str) -> None:
        plan = self.rng.choice(self.spaces)
        if action.startswith("browser_"):
            await self._browser(action, plan)
        elif action == "duplicate":
            await self._duplicate()
        elif action in TWINS:
            await self._twins(action, plan)
        elif action.startswith("late_"):
            await self._late(action)
        else:
            await self._api(action, plan)

    # one request, retried until the relay answers -------------------------------------------

    async def _post(
        self, client: httpx.AsyncClient, path: str, channel: str, sent: Sequence[Sent] = (),
        **kwargs: Any,
    ) -> httpx.Response | None:
        """POST until an answer other than 5xx or 429 comes (the relay may be down), or give up.

        The events `sent` get their attempts and the times of the first and the answer."""
        began = time.time()
        for s in sent:
            s.first_sent_at = began
        while True:
            self.ledger.requests[channel] += 1
            for s in sent:
                s.attempts += 1
            try:
                answer = await client.post(path, **kwargs)
                if answer.status_code < 500 and answer.status_code != 429:
                    for s in sent:
                        s.answered_at = time.time()
                    return answer
                cause = str(answer.status_code)
            except httpx.TransportError as exc:
                cause = type(exc).__name__
            self.ledger.client_retries[cause] += 1
            if time.time() > self.give_up_at:
                return None
            await asyncio.sleep(0.2)  # a client's retry delay while the relay restarts

    async def _send(self, sent: Sent) -> None:
        """Send one event, by the API or alone in a browser batch."""
        if sent.channel == "api":
            await self._send_api(sent)
        else:
            await self._send_browser(sent.space, [sent])

    # the Create Event API -----------------------------------------------------------------------

    async def _api(self, action: str, plan: SpacePlan) -> None:
        n = self.n + 1
        event: dict[str, Any]
        kind, reject = "conversion", False
        if action == "api_purchase":
            await self._send_api(self._purchase(plan))
            return
        if action == "api_lead":
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
        await self._send_api(self._new(plan, "api", "api", kind, event, reject=reject))

    def _purchase(self, plan: SpacePlan, role: str = "", visit: bool = True) -> Sent:
        """An API purchase: the money (amount, order, email), and unless `visit` is False the
        page and source too (then its browser twin brings them)."""
        n = self.n + 1
        event: dict[str, Any] = {
            "event_name": "purchase",
            "email": f"buyer{n}@soak.test",
            "amount": round(self.rng.uniform(5, 500), 2),
            "order_id": f"order-{n}",
        }
        if visit:
            event.update(url=f"https://{plan.id}.example/checkout/thanks", comet_source="google")
        return self._new(plan, "api", "api", "conversion", event, role=role)

    async def _send_api(self, sent: Sent) -> None:
        answer = await self._post(
            self.api, TRACK, "api", [sent], json=sent.event,
            headers={"Authorization": f"Bearer key-{sent.space}-write"},
        )
        sent.state = _state(answer)
        if answer is not None and sent.state == "accepted":
            body = answer.json()
            sent.outcome = str(body.get("outcome"))
            sent.other = body.get("merged_with", body.get("duplicate_of"))

    # the browser endpoint -----------------------------------------------------------------------

    async def _browser(self, action: str, plan: SpacePlan) -> None:
        batch: list[Sent] = []
        for _ in range(self.rng.randint(1, 3) if action == "browser_page_views" else 1):
            batch.append(self._page_view(plan))
        if action == "browser_conversion":
            event = {
                "event_name": self.rng.choice(CONVERSIONS),
                "url": f"https://{plan.id}.example/cart?utm_source=google&utm_campaign=soak",
                "amount": round(self.rng.uniform(5, 100), 2),
            }
            batch.append(self._new(plan, "web", "browser", "conversion", event))
        elif action == "browser_invalid":
            event = self.rng.choice(
                [
                    {"event_name": "no_such_event"},
                    {"event_name": "view_content", "amount": "12"},
                    {"event_name": "view_content", "url": "not a url"},
                ]
            )
            batch.append(self._new(plan, "web", "browser", "invalid", event))
        await self._send_browser(plan.id, batch)

    def _page_view(self, plan: SpacePlan) -> Sent:
        page = self.rng.randint(1, 500)
        event = {
            "event_name": "view_content",
            "fingerprint": f"fp-{page % 37}",
            "url": f"https://{plan.id}.example/p/{page}?utm_source=google&utm_medium=cpc",
        }
        return self._new(plan, "web", "browser", "page_view", event)

    async def _send_browser(self, space: str, batch: list[Sent]) -> None:
        """One batch from one client (a forger's when its events say so); what became of each."""
        first = batch[0]
        client = self.forger if first.ua == FORGER_UA else self.browser
        answer = await self._browser_post(
            client, space, [s.event for s in batch], batch, first.address
        )
        if answer is None or answer.status_code != 202:
            for sent in batch:
                sent.state = _state(answer)
            return
        body = answer.json()
        refused = {item["index"] for item in body["refused"]}
        kept = len(batch) - len(refused)
        # A batch's answer only counts; where all of its events fared alike, each did so.
        outcome = next(
            (name for name, count in (("accepted", body["accepted"]), ("merged", body["merged"]),
                                      ("duplicate", body["duplicates"])) if count == kept),
            "",
        )
        for index, sent in enumerate(batch):
            sent.state = "refused" if index in refused else "accepted"
            sent.outcome = "" if index in refused else outcome

    async def _browser_post(
        self, client: httpx.AsyncClient, space: str, events: list[dict[str, Any]],
        sent: Sequence[Sent] = (), address: str = "127.0.0.1",
    ) -> httpx.Response | None:
        headers = {"Origin": f"https://{space}.example", "Content-Type": "text/plain"}
        if address != "127.0.0.1":  # from behind the trusted loopback proxy
            headers["X-Forwarded-For"] = address
        return await self._post(
            client, f"/e?k=pk_{space}", "browser", sent,
            content=json.dumps({"e": events}), headers=headers,
        )

    # twins: one purchase from both sides -------------------------------------------------------

    def _forger_address(self) -> str:
        self.addresses += 1
        return f"203.0.{self.addresses // 250 % 250}.{self.addresses % 250 + 1}"

    async def _twins(self, action: str, plan: SpacePlan) -> None:
        """A browser purchase and an API purchase of the same key (or order), the second sent
        within `twin_gap` s of the first's answer, well inside the twin window.

        A forger claims the key or the order of the shop's purchase with an amount of 0.01 and
        an email of its own, from an address of its own; the thank-you page sends the shop's
        purchase as the pixel does (same key, the visit's page, campaign and fingerprint), before
        or after the backend sends it with the money."""
        forged = action.startswith("twin_forged")
        money = self._purchase(plan, "money", visit=forged)
        if forged:
            event: dict[str, Any] = {
                "event_name": "purchase",
                "amount": FORGED_AMOUNT,
                "email": FORGED_EMAIL,
                "comet_campaign": "forger",
                "fingerprint": "fp-forger",
                "url": f"https://{plan.id}.example/thanks",
            }
            key = money.key
            if action == "twin_forged_order":
                event["order_id"], key = money.event["order_id"], None
            twin = self._new(plan, "forged", "browser", "conversion", event, key, role="forged",
                             address=self._forger_address(), ua=FORGER_UA)
        else:
            event = {
                "event_name": "purchase",
                "amount": money.event["amount"],
                "fingerprint": f"fp-visitor-{self.n % 37}",
                "url": f"https://{plan.id}.example/checkout/thanks",
                "comet_source": "facebook",
                "comet_campaign": "spring",
            }
            twin = self._new(plan, "visit", "browser", "conversion", event, money.key,
                             role="visit")
        twin.partner, money.partner = money.id, twin.id
        first, second = (money, twin) if action == "twin_api_first" else (twin, money)
        await self._send(first)
        await asyncio.sleep(self.rng.uniform(0.0, self.options.twin_gap))
        await self._send(second)

    async def _late(self, action: str) -> None:
        """A twin of an event answered at least `late_after` s ago (sent by then, unless a
        backlog or the upstream's faults held it): a browser twin of an API purchase, by its
        key or its order, or an API twin of a browser conversion, by its key."""
        channel = "api" if action == "late_browser_twin" else "browser"
        cutoff = time.time() - self.options.late_after
        targets = [
            s for s in self.ledger.events.values()
            if s.role == "" and s.channel == channel and s.kind == "conversion"
            and s.state == "accepted" and s.outcome == "accepted" and not s.reject
            and s.partner is None and s.id not in self.ledger.resent
            and 0 < s.answered_at <= cutoff
            and (channel == "browser" or s.event["event_name"] == "purchase")
        ]
        if not targets:
            return
        target = self.rng.choice(targets)
        plan = next(p for p in SPACES if p.id == target.space)
        if channel == "api":
            event: dict[str, Any] = {
                "event_name": "purchase",
                "fingerprint": f"fp-late-{self.n % 37}",
                "url": f"https://{plan.id}.example/thanks?utm_campaign=late",
            }
            key = target.key
            if self.rng.random() < 0.5:
                event["order_id"], key = target.event["order_id"], None
            late = self._new(plan, "late", "browser", "conversion", event, key, role="late_browser")
        else:
            event = {
                "event_name": target.event["event_name"],
                "email": f"late{self.n + 1}@soak.test",
                "amount": target.event["amount"],
            }
            late = self._new(plan, "api", "api", "conversion", event, target.key, role="late_api")
        target.partner, late.partner = late.id, target.id
        await self._send(late)

    # floods of forged purchases ----------------------------------------------------------------

    async def _floods(self, t0: float, until: float) -> None:
        """A flood every `flood_every` s, to each Space in turn, until `until`."""
        i = 0
        while (at := t0 + self.options.flood_every * (i + 0.5)) < until:
            await asyncio.sleep(max(0.0, at - time.time()))
            await self._flood(SPACES[i % len(SPACES)])
            i += 1

    async def _flood(self, plan: SpacePlan) -> None:
        """Forged purchases worth `flood_seconds` of the Space's upstream rate, at once, in one
        batch from each of `flood_addresses` addresses (each its own, so no address limit)."""
        total = math.ceil(plan.upstream_rate / 60 * self.options.flood_seconds)
        per_address = math.ceil(total / self.options.flood_addresses)
        batches = []
        for _ in range(self.options.flood_addresses):
            address = self._forger_address()
            batches.append([
                self._new(plan, "flood", "browser", "conversion", {
                    "event_name": "purchase",
                    "amount": FORGED_AMOUNT,
                    "email": FORGED_EMAIL,
                    "order_id": f"flood-{self.n + 1}",
                    "comet_campaign": "forger",
                    "fingerprint": "fp-forger",
                }, role="flood", address=address, ua=FORGER_UA)
                for _ in range(per_address)
            ])
        began = time.time()
        await asyncio.gather(*(self._send_browser(plan.id, b) for b in batches))
        self.ledger.floods.append({
            "space": plan.id, "at": began, "done": time.time(),
            "events": sum(len(b) for b in batches), "addresses": len(batches),
        })

    # resends the relay must recognise ----------------------------------------------------------

    async def _duplicate(self) -> None:
        accepted = [
            s for s in self.ledger.accepted()
            if s.role == "" and s.partner is None and s.outcome == "accepted"
        ]
        if not accepted:
            return
        original = self.rng.choice(accepted)
        self.ledger.resent.add(original.id)
        copy = {**original.event, "profile_field_2": DUPLICATE}
        if original.channel == "browser":
            how = "browser event_id"
            self.ledger.duplicates_sent[how] += 1
            answer = await self._browser_post(self.browser, original.space, [copy])
            body = answer.json() if answer is not None and answer.status_code == 202 else {}
            replayed = body.get("duplicates") == 1 and body.get("accepted") == 0
        else:
            how = "api idempotency_key"
            if "order_id" in copy and self.rng.random() < 0.5:
                how = "api event_name + order_id"
                copy["idempotency_key"] = f"{original.key}-again"  # a stray if it gets through
            self.ledger.duplicates_sent[how] += 1
            answer = await self._post(
                self.api,
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
                f"resend of {original.id} ({how}) not deduplicated: {shown}"
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
            twin_window=options.twin_window,
        )
        for plan in SPACES
    ]
    relay_extra = (
        f"upstream_timeout_seconds = {options.upstream_timeout}\n"
        "browser_rate_limit_per_minute = 1000000\n"
        'log_format = "json"'  # each attempt's start time, for the pace (`starts`)
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
        load.run(until=t0 + options.seconds, t0=t0),
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
    ledger_file = relay.config.parent / "ledger.json"
    ledger_file.write_text(json.dumps([asdict(s) for s in ledger.events.values()]))
    report = judge(options, ledger, chaos, records, stats, dead, starts(relay.log))
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


def starts(log: Path) -> dict[str, list[float]]:
    """When the relay started each upstream request, by Space, from its JSON event log (every
    settled attempt carries `started_at`), over all the relay's lives."""
    found: dict[str, list[float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{") or '"started_at"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a kill
            continue
        if isinstance(entry.get("started_at"), int | float):
            found.setdefault(entry["space"], []).append(float(entry["started_at"]))
    return found


def judge(
    options: Options,
    ledger: Ledger,
    chaos: Chaos,
    records: list[dict[str, Any]],
    stats: dict[str, Any],
    dead: list[dict[str, Any]],
    started: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Hold the run against every promise; the report with its `problems`. `started`: when
    the relay started each upstream request, by Space (its own record of its pace)."""
    problems = list(ledger.problems)
    notes: list[str] = []
    sent = ledger.events
    accepted = {s.id for s in ledger.accepted()}
    rejected = {i for i in accepted if sent[i].reject}
    refused = {s.id for s in sent.values() if s.state == "refused"}
    wrong = [
        s for s in sent.values() if s.state != ("refused" if s.kind == "invalid" else "accepted")
    ]
    for s in wrong[:10]:
        problems.append(f"{s.channel} event {s.id} ({s.kind}) ended {s.state}")
    if len(wrong) > 10:
        problems.append(f"... and {len(wrong) - 10} more events with an unexpected answer")

    token_space = {f"Bearer {p.token}": p.id for p in SPACES}
    up = Upstream(records, chaos, options.slow_delay + options.upstream_timeout)
    fate = fates(ledger)
    twins = check_answers(options, ledger, problems)

    # accepted = what the upstream was to get + what merged into its twin + twins' duplicates;
    # what it was to get = delivered + dead, by the upstream and by the outbox
    own = {i for i, f in fate.items() if f == "own"}
    either = {i for i, f in fate.items() if f == "either"}
    expected = own | (either & (set(up.delivered) | up.refused))
    lost = own - set(up.delivered) - up.refused
    if lost:
        problems.append(
            f"{len(lost)} accepted events never reached the upstream: {sorted(lost)[:5]}"
        )
    if up.refused != rejected:
        problems.append(
            f"the upstream refused {len(up.refused)} events, "
            f"{len(rejected)} were marked for it"
        )
    dead_keys = {d["idempotency_key"] for d in dead}
    rejected_keys = {sent[i].key for i in rejected}
    if dead_keys != rejected_keys or any(d["last_status"] != 422 for d in dead):
        problems.append(
            f"dead letters {sorted(dead_keys ^ rejected_keys)[:5]} differ from the events "
            f"the upstream refused; statuses {Counter(d['last_status'] for d in dead)}"
        )
    for plan in SPACES:
        counts = stats["spaces"].get(plan.id, {})
        mine = {i for i in expected if sent[i].space == plan.id}
        want = {"queued": 0, "delivered": len(mine - rejected), "dead": len(mine & rejected)}
        got = {k: counts.get(k, 0) for k in want}
        if got != want:
            problems.append(f"Space {plan.id}: outbox stats {got}, expected {want}")

    # nothing refused or deduplicated gets through; what gets through is what was accepted,
    # an API event with exactly its own fields and values (and its browser twin's visit where
    # it left a gap), a browser event with what only the relay sets
    strays = set(up.ids) - accepted
    if strays:
        problems.append(
            f"{len(strays)} events the relay did not accept reached the upstream: "
            f"{sorted(strays)[:5]}"
        )
    marked = sum(1 for b in up.bodies if b.get("profile_field_2") == DUPLICATE)
    if marked:
        problems.append(
            f"{marked} resends the relay acknowledged as duplicates reached the upstream"
        )
    problems += check_bodies(ledger, fate, up)
    forged = check_forged(options, ledger, up, token_space)
    for item in forged["problems"][:5]:
        problems.append(f"a forged purchase reached the upstream for what the API sent: {item}")
    if len(forged["problems"]) > 5:
        problems.append(f"... and {len(forged['problems']) - 5} more forged purchases")
    if forged["late"]:
        notes.append(
            f"{len(forged['late'])} forged purchases reached the upstream before the API's twin "
            f"came (after their {options.twin_window:g} s window, as the contract allows): "
            f"{forged['late'][:5]}"
        )
    twins["forged_at_upstream"] = len(forged["problems"]) + len(forged["late"])
    twins.update(check_late(ledger, up, problems))
    floods = check_floods(options, ledger, fate, up, chaos)
    problems += floods.pop("problems")

    # duplicates at the upstream: only a delivery the kill kept from being marked is sent again
    repeats = []
    for sid in (i for i, n in up.delivered.items() if n > 1):
        times = [at for at, status in up.attempts[sid] if status == 202]
        for at in times[:-1]:
            before = near_kill(at, chaos.kills, up.grace)
            repeats.append(
                {
                    "id": sid,
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

    # No Space over its rate, by the relay's own start times: that is the pace it keeps. The
    # arrivals at the upstream add what the machine adds (a stalled process delivers several
    # requests at once), so they are reported, and over the bound only noted.
    rates = {}
    for plan in SPACES:
        arrivals = [r["at"] for r in records if token_space.get(r["authorization"]) == plan.id]
        starts_of = (started or {}).get(plan.id, [])
        times = starts_of or arrivals
        second, per_minute = busiest(times, 1.0), len(busiest(times, 60.0))
        per_second = len(second)
        readme_second, readme_minute = plan.upstream_rate // 60 + 1, plan.upstream_rate + 1
        allowed_second, allowed_minute = readme_second, readme_minute
        if not starts_of:  # no start times: judged by arrivals, with their jitter
            allowed_second, allowed_minute = readme_second + JITTER, readme_minute + JITTER
        began = chaos.lives[0][0]
        arrived = busiest(arrivals, 1.0)
        rates[plan.id] = {
            "judged_by": "starts" if starts_of else "arrivals",
            "requests": len(times),
            "rate_per_minute": plan.upstream_rate,
            "max_per_second": per_second,
            "readme_per_second": readme_second,
            "allowed_per_second": allowed_second,
            "max_per_minute": per_minute,
            "allowed_per_minute": allowed_minute,
            "max_arrivals_per_second": len(arrived),
            "span_seconds": round(max(times) - min(times), 1) if times else 0,
            # where the busiest second was, and how its requests were spaced
            "busiest_second_at": round(second[0] - began, 2) if second else None,
            "busiest_second_gaps_ms": [round((b - a) * 1000) for a, b in pairwise(second)],
            "kills_at": [round(k - began, 2) for k in chaos.kills],
        }
        if per_second > allowed_second or per_minute > allowed_minute:
            problems.append(f"Space {plan.id} over its rate: {rates[plan.id]}")
        elif per_second > readme_second or len(arrived) > readme_second + JITTER:
            notes.append(
                f"Space {plan.id}: {per_second} starts and {len(arrived)} arrivals in one "
                f"second (README: at most {readme_second} starts; arrivals add the machine's "
                f"jitter): {rates[plan.id]}"
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

    by_kind = Counter(f"{s.channel} {s.role or s.kind}" for s in sent.values())
    delivered = len(set(up.delivered) & expected)
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
        "merged": sum(1 for f in fate.values() if f == "merged"),
        "twin_duplicates": sum(1 for f in fate.values() if f == "dropped"),
        # browser twins whose retried request was answered a duplicate of its first try: not
        # at the upstream on their own, they merged or were duplicates (the answer cannot tell)
        "merged_or_duplicate": len(either - expected),
        "upstream_events": len(expected),
        "refused": len(refused),
        "duplicates": {
            "sent": sum(ledger.duplicates_sent.values()),
            "replayed": sum(ledger.duplicates_replayed.values()),
            "by_how": dict(ledger.duplicates_sent),
        },
        "delivered": delivered,
        "dead": len(dead_keys),
        "outbox": {
            "delivered": stats["delivered"],
            "dead": stats["dead"],
            "queued": stats["queued"],
        },
        "lost": len(lost),
        "twins": twins,
        "floods": floods,
        "upstream": {
            "requests": len(records),
            "faults": dict(faults),
            "refused_422": sum(1 for r in records if r["status"] == 422),
            "unanswered": sum(1 for r in records if r.get("answered") is False),
            "duplicates": repeats,
            "duplicates_of_resent_events": sum(1 for r in repeats if r["id"] in ledger.resent),
        },
        "rates": rates,
        "retry_after_not_kept": held,
        "problems": problems,
        "notes": notes,
    }


class Upstream:
    """The upstream's record, by the ledger id each request carried."""

    def __init__(self, records: list[dict[str, Any]], chaos: Chaos, grace: float) -> None:
        self.records = records
        self.kills = chaos.kills
        self.grace = grace  # a request this long before a kill may have been sent again after
        self.bodies = [json.loads(r["body"]) for r in records]
        self.ids = [str(b.get(ID_FIELD)) for b in self.bodies]
        self.attempts: dict[str, list[tuple[float, Any]]] = {}  # id -> [(at, status)], in order
        for sid, r in sorted(zip(self.ids, records), key=lambda pair: pair[1]["at"]):
            self.attempts.setdefault(sid, []).append((r["at"], r["status"]))
        self.delivered: Counter[str] = Counter(
            i for i, r in zip(self.ids, records) if r["status"] == 202
        )
        self.refused = {i for i, r in zip(self.ids, records) if r["status"] == 422}

    def first(self, sid: str, status: Any = None) -> float | None:
        """When the upstream first saw event `sid` (answered `status`, if given)."""
        return next(
            (at for at, got in self.attempts.get(sid, ()) if status is None or got == status), None
        )

    def near_kill(self, at: float) -> bool:
        return near_kill(at, self.kills, self.grace) is not None


def fates(ledger: Ledger) -> dict[str, str]:
    """What the relay's answers say should become of each accepted event: "own" (it reaches
    the upstream as itself), "merged" (into its API twin, which carries its visit), "dropped"
    (a browser twin's duplicate of its API twin) or "either" (own or merged: the answer to a
    retried request says only that an earlier try was kept)."""
    sent = ledger.events
    fate: dict[str, str] = {}
    for s in ledger.accepted():
        if s.channel == "api" or s.role in ("", "flood"):
            fate[s.id] = "own"  # a plain event's duplicate answer is a retry's: its try was kept
        elif s.outcome == "merged":
            fate[s.id] = "merged"
        elif s.outcome == "duplicate":
            fate[s.id] = "dropped" if s.attempts == 1 else "either"
        else:
            fate[s.id] = "own"
    for s in ledger.accepted("api"):
        partner = sent.get(s.partner or "")
        if partner is None or partner.id not in fate:
            continue
        if s.outcome == "merged":
            fate[partner.id] = "merged"
        elif s.outcome == "duplicate" and fate[partner.id] == "own":
            fate[partner.id] = "either"  # the API's first try may have merged with it
    return fate


def check_answers(options: Options, ledger: Ledger, problems: list[str]) -> dict[str, Any]:
    """The relay's answers about twins: the API's event is never a duplicate of a browser's,
    and twins that meet inside the window merge (the API side says "merged", with the
    browser's key, when it came second; the browser's answer counts it when it did)."""
    sent = ledger.events
    window = options.twin_window
    for s in ledger.accepted("api"):
        if s.outcome == "duplicate" and s.attempts == 1:
            problems.append(
                f"API event {s.id} was answered a duplicate (of {s.other}) on its first try: "
                "only an earlier API event may make it one"
            )
        partner = sent.get(s.partner or "")
        if s.outcome == "merged" and (partner is None or s.other != partner.key):
            problems.append(f"API event {s.id} merged with {s.other}, which is not its twin")
    for s in ledger.accepted("browser"):
        if s.outcome == "merged" and s.partner is None:
            problems.append(f"browser event {s.id} merged, though no API twin was sent")
    pairs: dict[str, Counter[str]] = {}
    for b in sent.values():
        if b.role not in ("forged", "visit") or b.state != "accepted":
            continue
        a = sent[str(b.partner)]
        if a.state != "accepted":
            continue
        browser_first = b.first_sent_at < a.first_sent_at
        name = f"{b.role} by {'order' if 'order_id' in b.event else 'key'}" + (
            ", browser first" if browser_first else ", API first"
        )
        if browser_first:
            met = a.outcome == "merged"
            in_time = b.outcome == "accepted" and a.attempts == 1 and (
                a.answered_at < b.first_sent_at + window
            )
        else:
            met = b.outcome == "merged"
            in_time = a.outcome == "accepted" and b.attempts == 1 and (
                b.answered_at < a.first_sent_at + window
            )
        tally = pairs.setdefault(name, Counter())
        tally["sent"] += 1
        tally["merged"] += met
        tally["second inside the window"] += in_time
        if in_time and not met:
            problems.append(
                f"{b.role} browser purchase {b.id} and API purchase {a.id} met inside the twin "
                f"window but did not merge (answers: browser {b.outcome}, API {a.outcome})"
            )
    late: dict[str, Counter[str]] = {}
    for s in ledger.accepted():
        if s.role in ("late_browser", "late_api"):
            late.setdefault(s.role, Counter())[s.outcome or "unknown"] += 1
            if s.role == "late_browser" and s.outcome == "accepted":
                problems.append(
                    f"late browser twin {s.id} was queued beside its API purchase {s.partner}: "
                    "a browser event that meets an API event either merges or is a duplicate"
                )
    return {
        "pairs": {k: dict(v) for k, v in sorted(pairs.items())},
        "late": {k: dict(v) for k, v in sorted(late.items())},
    }


def check_late(ledger: Ledger, up: Upstream, problems: list[str]) -> dict[str, Any]:
    """Twins sent after their partner reached the upstream (by its record, no kill near that
    delivery): a browser twin is a duplicate; an API twin is queued and sent too."""
    after: Counter[str] = Counter()
    for late in ledger.accepted():
        if late.role not in ("late_browser", "late_api") or late.attempts != 1:
            continue
        target = ledger.events[str(late.partner)]
        sent_at = up.first(target.id, 202)
        if sent_at is None or sent_at >= late.first_sent_at or up.near_kill(sent_at):
            continue
        after[late.role] += 1
        want = "duplicate" if late.role == "late_browser" else "accepted"
        if late.outcome != want:
            problems.append(
                f"{late.role} twin {late.id} of {target.id}, sent "
                f"{late.first_sent_at - sent_at:.1f} s after the upstream got {target.id}, "
                f"was answered {late.outcome}, not {want}"
            )
    return {"late_after_delivery": dict(after)}


def carried(s: Sent) -> dict[str, Any]:
    """A browser event as the relay sends it (docs/CONTRACT.md, section 3), but for its
    `event_time` and `comet_token` (a visitor id): the fields it sent, `event_id` as its key,
    the request's User-Agent and address (with a fingerprint), attribution from its URL."""
    event = {k: v for k, v in s.event.items() if k != "event_id"}
    event["idempotency_key"] = s.key
    event["user_agent"] = s.ua
    if "fingerprint" in event:
        event["ip"] = s.address
    query = parse_qs(urlsplit(str(event.get("url", ""))).query)
    attribution = {UTM[k]: v[0] for k, v in query.items() if k in UTM}
    attribution.update((k, v[0]) for k, v in query.items() if k.startswith("comet_"))
    for name, value in attribution.items():
        event.setdefault(name, value)
    return event


def twin_fill(api: Sent, browser: Sent) -> dict[str, Any]:
    """What `browser` adds to `api` when they merge: what the API left out of FILLED_BY_BROWSER
    (comet_token: the browser's visitor id), and fingerprint with ip where it has neither."""
    visit = carried(browser)
    fill = {f: visit.get(f) for f in FILLED_BY_BROWSER if f not in api.event}
    fill = {f: v for f, v in fill.items() if v is not None or f == "comet_token"}
    if "fingerprint" in visit and not {"fingerprint", "ip"} & api.event.keys():
        fill.update(fingerprint=visit["fingerprint"], ip=visit["ip"])
    return fill


def _same(body: dict[str, Any], want: dict[str, Any]) -> bool:
    """`body` holds exactly `want`'s fields; a `comet_token` of None in `want` is any id."""
    if body.keys() != want.keys():
        return False
    return all(
        (isinstance(body[k], str) and body[k] != "") if k == "comet_token" and v is None
        else body[k] == v
        for k, v in want.items()
    )


def check_bodies(ledger: Ledger, fate: dict[str, str], up: Upstream) -> list[str]:
    """Every request the upstream got, against the event it carries: an API event exactly as
    sent, plus, if its browser twin merged into it, exactly the twin's visit in the fields it
    left out (on a delivered request at least once); a browser event exactly as sent with what
    the relay sets; and no browser twin that merged or was a duplicate on its own, but for a
    resend around a kill."""
    sent = ledger.events
    altered: set[str] = set()
    unfilled: set[str] = set()
    unenriched: set[str] = set()
    loose: set[str] = set()
    for sid, attempts in up.attempts.items():
        s = sent.get(sid)
        if s is None:
            continue  # a stray, listed as such
        bodies = [b for i, b in zip(up.ids, up.bodies) if i == sid]
        if s.channel == "browser":
            # A duplicate was never queued. A merged twin may have been tried before its API
            # twin came (the merge keeps a retry's backoff), but never delivered, nor tried
            # once the API's answer said it had merged.
            merged_by = sent[str(s.partner)].answered_at if s.partner else 0.0
            wrong = [
                at for at, status in attempts
                if fate.get(sid) == "dropped"
                or fate.get(sid) == "merged" and (status == 202 or at > merged_by)
            ]
            if any(not up.near_kill(at) for at in wrong):
                loose.add(sid)
            want = carried(s)
            if not all(_same({**b, "event_time": None} if "event_time" in b else b,
                             {**want, "comet_token": None, "event_time": None}) for b in bodies):
                unenriched.add(sid)
            continue
        partner = sent.get(s.partner or "")
        fill = twin_fill(s, partner) if partner is not None else {}
        may_fill = partner is not None and fate.get(partner.id) in ("merged", "either")
        for b in bodies:
            if not (_same(b, s.event) or (may_fill and _same(b, {**s.event, **fill}))):
                altered.add(sid)
        if partner is not None and fate.get(partner.id) == "merged" and not any(
            _same(b, {**s.event, **fill})
            for b, (_, status) in zip(bodies, attempts) if status == 202
        ):
            unfilled.add(sid)
    problems = []
    if altered:
        problems.append(
            f"{len(altered)} API events reached the upstream changed, or with more than their "
            f"twin's visit: {sorted(altered)[:5]}"
        )
    if unfilled:
        problems.append(
            f"{len(unfilled)} merged API events reached the upstream without their twin's "
            f"visit: {sorted(unfilled)[:5]}"
        )
    if unenriched:
        problems.append(
            f"{len(unenriched)} browser events did not reach the upstream as sent with what the "
            f"relay sets: {sorted(unenriched)[:5]}"
        )
    if loose:
        problems.append(
            f"{len(loose)} browser twins that merged or were duplicates reached the upstream on "
            f"their own: {sorted(loose)[:5]}"
        )
    return problems


def check_forged(
    options: Options, ledger: Ledger, up: Upstream, token_space: dict[str, str]
) -> dict[str, list[str]]:
    """Every request the upstream got with a forged amount for a key or an order (of the same
    event name) that an accepted API event also had. Only one whose API twin was answered after
    the forged one's twin window had passed is allowed (`late`): the relay could not hold it."""
    sent = ledger.events
    claims: dict[tuple[str, str, str, str], Sent] = {}
    for s in ledger.accepted("api"):
        name = s.event["event_name"]
        claims[(s.space, name, "key", s.key)] = s
        if "order_id" in s.event:
            claims[(s.space, name, "order", str(s.event["order_id"]))] = s
    found: dict[str, list[str]] = {"problems": [], "late": []}
    for record, body, sid in zip(up.records, up.bodies, up.ids):
        if body.get("amount") != FORGED_AMOUNT:
            continue
        space, name = token_space.get(record["authorization"], "?"), body.get("event_name")
        api = claims.get((space, name, "key", str(body.get("idempotency_key")))) or claims.get(
            (space, name, "order", str(body.get("order_id")))
        )
        if api is None:
            continue
        forged = sent.get(sid)
        late = forged is not None and api.answered_at >= forged.first_sent_at + options.twin_window
        found["late" if late else "problems"].append(
            f"{sid} (key {body.get('idempotency_key')}, order {body.get('order_id')}) "
            f"with {api.id}, answered {api.outcome}"
        )
    return found


def check_floods(
    options: Options, ledger: Ledger, fate: dict[str, str], up: Upstream, chaos: Chaos
) -> dict[str, Any]:
    """API conversions go ahead of forged purchases still queued.

    By the upstream's order of arrival: once an API conversion is due (at the latest its
    twin window after its answer), at most what the forwarder had claimed or had in flight
    (a claim batch, 16 requests) may reach the upstream ahead of it; counted per Space over
    the floods' purchases, for every API conversion whose wait held no kill. `overtook`
    counts the API conversions that reached the upstream ahead of flood purchases accepted
    before they were sent."""
    report: dict[str, Any] = {
        "floods": len(ledger.floods),
        "forged_events": sum(f["events"] for f in ledger.floods),
        "spaces": {},
    }
    problems: list[str] = []
    for plan in SPACES:
        flood = [s for s in ledger.accepted("browser") if s.role == "flood" and s.space == plan.id]
        times = sorted(at for s in flood for at, _ in up.attempts.get(s.id, ()))
        firsts = [(s.answered_at, up.first(s.id) or math.inf) for s in flood]
        allowed = max(1, min(20, math.ceil(plan.upstream_rate / 240))) + IN_FLIGHT_REQUESTS
        judged, worst, overtook, overtaken, over = 0, 0, 0, 0, []
        for a in ledger.accepted("api"):
            first = up.first(a.id)
            if a.space != plan.id or a.kind != "conversion" or fate[a.id] != "own" or not first:
                continue
            if any(a.first_sent_at <= k <= first for k in chaos.kills):
                continue  # leased by a process that died: its lease must run out first
            judged += 1
            due = a.answered_at + options.twin_window
            ahead = bisect.bisect_left(times, first) - bisect.bisect_right(times, due)
            worst = max(worst, ahead)
            if ahead > allowed:
                over.append(f"{a.id} ({ahead})")
            passed = sum(1 for answered, at in firsts if answered < a.first_sent_at and at > first)
            overtook += passed > 0
            overtaken += passed
        report["spaces"][plan.id] = {
            "api_conversions_judged": judged,
            "most_forged_ahead_once_due": worst,
            "allowed": allowed,
            "api_conversions_ahead_of_queued_forged": overtook,
            "forged_overtaken": overtaken,
        }
        if over:
            problems.append(
                f"Space {plan.id}: {len(over)} API conversions reached the upstream after more "
                f"than {allowed} forged purchases that went once they were due: {over[:5]}"
            )
    report["problems"] = problems
    return report


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
    twins, floods = report["twins"], report["floods"]
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
            f"of the accepted, {report['merged']} merged into their API twin and "
            f"{report['twin_duplicates']} were browser twins' duplicates, "
            f"{report['merged_or_duplicate']} one or the other (retried requests); "
            f"{report['upstream_events']} for the upstream = delivered "
            f"{report['delivered']} + dead {report['dead']} (all upstream 422); "
            f"lost {report['lost']}"
        ),
        (
            f"twins: {twins['pairs']}; late twins {twins['late']}, after delivery "
            f"{twins['late_after_delivery']}; forged purchases at the upstream for what the API "
            f"sent: {twins['forged_at_upstream']}"
        ),
        (
            f"floods: {floods['floods']} of {floods['forged_events']} forged purchases; "
            + "; ".join(
                f"{sid}: {f['api_conversions_judged']} API conversions, at most "
                f"{f['most_forged_ahead_once_due']} forged ahead once due (allowed "
                f"{f['allowed']}), {f['api_conversions_ahead_of_queued_forged']} went ahead of "
                f"{f['forged_overtaken']} queued forged"
                for sid, f in floods["spaces"].items()
            )
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
