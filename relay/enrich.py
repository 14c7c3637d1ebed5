"""What the relay adds to a browser event (CONTRACT.md §3), as pure functions.

The browser may not set `ip`, `user_agent`, `comet_token` or `idempotency_key`: whatever it
sends for them is dropped without a word (the snippet never sends them, so only a forger
would, and refusing the event would only lose it). The relay sets them from the request:
`ip` only together with a `fingerprint`, since the API refuses one without the other (with
no usable client address the fingerprint is dropped instead);
`idempotency_key` from the event's `event_id`, so the browser pixel and the relay share it.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import user_agents

from relay import rules
from relay.errors import Invalid, PayloadTooLarge

RELAY_ONLY: frozenset[str] = frozenset({"ip", "user_agent", "comet_token", "idempotency_key"})
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
MAX_CLOCK_SKEW_SECONDS = 300
MAX_USER_AGENT_CHECKED = 512

COMET_PARAMS: tuple[str, ...] = (
    "comet_source",
    "comet_network",
    "comet_campaign",
    "comet_ad_group",
    "comet_ad_id",
    "comet_keyword",
    "comet_type",
)
UTM_PARAMS: Mapping[str, str] = {
    "utm_source": "comet_source",
    "utm_medium": "comet_type",
    "utm_campaign": "comet_campaign",
    "utm_term": "comet_keyword",
    "utm_content": "comet_ad_id",
}

# Crawlers that user-agents (ua-parser) may not know. Automated browsers (HeadlessChrome,
# Playwright, Puppeteer) are deliberately absent: they are people's tests and tools, and the
# snippet does not skip them either (DESIGN.md house rule 9).
KNOWN_CRAWLERS: tuple[str, ...] = (
    "googlebot",
    "bingbot",
    "ahrefsbot",
    "semrushbot",
    "yandexbot",
    "baiduspider",
    "duckduckbot",
    "applebot",
    "facebookexternalhit",
    "petalbot",
    "bytespider",
    "gptbot",
    "claudebot",
    "ccbot",
    "mj12bot",
    "dotbot",
    "slurp",
)


@dataclass(frozen=True)
class Client:
    """What the relay knows of the sender of a request, independent of what it claims."""

    ip: str | None
    user_agent: str | None
    comet_token: str


def client_address(host: str | None) -> str | None:
    """The client's IP address in canonical form, or None when `host` is not an IP address.

    `host` is the peer address, or the right-most untrusted `X-Forwarded-For` hop when the
    peer is a trusted proxy (uvicorn's ProxyHeadersMiddleware). A proxy may put a word there
    (`unknown`, an obfuscated `_hidden`), and no such word may become an event's `ip`. An
    IPv4 address mapped into IPv6 (a dual-stack socket) is given as the IPv4 address, and an
    IPv6 zone is dropped.
    """
    if not host:
        return None
    try:
        # A zone (fe80::1%eth0) names an interface of the relay's machine, not the client.
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def rate_key(host: str | None) -> str:
    """The per-client rate-limit bucket of a client address.

    An IPv6 client owns at least a /64 (one home, one phone): a bucket per IPv6 address would
    give each of them 2**64 buckets, so the bucket is the /64. Anything that is not an IP
    address shares one bucket: it cannot be told apart.
    """
    address = client_address(host)
    if address is None:
        return "ip:?"
    if ":" in address:
        return f"ip:{ipaddress.ip_network(address + '/64', strict=False)}"
    return f"ip:{address}"


def parse_batch(raw: bytes, max_events: int) -> list[object]:
    """The events of a browser body `{"e": [event, ...]}`; raises `Invalid` (422) for any
    other shape and `PayloadTooLarge` (413) for more than `max_events` events.

    Other keys beside `e` are ignored, so a later snippet may send more. The events themselves
    are not checked here: each is checked on its own by `browser_event`.
    """
    data = rules.parse_json(raw)
    events = data.get("e") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise Invalid(
            'The body must be a JSON object {"e": [event, ...]} holding a list of events.',
            errors={"e": ["is required: a list of event objects."]},
        )
    if len(events) > max_events:
        raise PayloadTooLarge(
            f"The batch holds {len(events)} events; this relay takes at most {max_events} "
            "per request: send smaller batches."
        )
    return events


def attribution_from_url(url: str) -> dict[str, str]:
    """The comet_* attribution fields that the query of `url` carries (CONTRACT.md §3).

    An explicit `comet_*` parameter wins over the UTM parameter mapped to the same field; of a
    parameter given twice, the first counts; empty values are ignored.
    """
    try:
        query = urlsplit(url).query
    except ValueError:  # e.g. a malformed IPv6 host
        return {}
    params: dict[str, str] = {}
    for name, value in parse_qsl(query):
        if value and name not in params:
            params[name] = value
    found = {field: params[utm] for utm, field in UTM_PARAMS.items() if utm in params}
    found.update({name: params[name] for name in COMET_PARAMS if name in params})
    return found


def event_time(sent: object, now: float) -> float:
    """The event's time: `sent` when it is Unix seconds of the last 7 days (5 minutes of clock
    skew allowed), else `now` in whole seconds."""
    if not isinstance(sent, int | float) or isinstance(sent, bool) or not math.isfinite(sent):
        return int(now)
    if now - MAX_EVENT_AGE_SECONDS <= sent <= now + MAX_CLOCK_SKEW_SECONDS:
        return sent
    return int(now)


def is_bot(user_agent: str | None) -> bool:
    """True for a crawler's user agent (user-agents' detection and `KNOWN_CRAWLERS`).

    No user agent at all is not taken for a bot: the event simply carries none.
    """
    if not user_agent:
        return False
    # Bounded, so neither the parser's regexes nor the cache pay for a giant header.
    return _is_bot(user_agent[:MAX_USER_AGENT_CHECKED])


@functools.lru_cache(maxsize=2048)
def _is_bot(user_agent: str) -> bool:
    lowered = user_agent.lower()
    if any(name in lowered for name in KNOWN_CRAWLERS):
        return True
    return bool(user_agents.parse(user_agent).is_bot)


def browser_event(
    sent: object, client: Client, custom_events: frozenset[str], now: float
) -> tuple[dict[str, object], dict[str, list[str]]]:
    """One event of a browser batch, enriched and checked: (the event, every problem).

    The event is ready for the outbox when the problems are empty. Problems are keyed by the
    field the browser sent, so a bad `event_id` is reported as `event_id`.
    """
    if not isinstance(sent, dict):
        return {}, {"event": ["must be a JSON object holding one event."]}
    event = {
        name: value
        for name, value in sent.items()
        if name not in RELAY_ONLY and name not in ("event_id", "event_time")
    }
    if sent.get("event_id") is not None:
        event["idempotency_key"] = sent["event_id"]
    url = event.get("url")
    if isinstance(url, str):
        for name, value in attribution_from_url(url).items():
            if event.get(name) is None:
                event[name] = value
    if event.get("fingerprint") is not None:
        ip = client_address(client.ip)
        if ip:
            event["ip"] = ip
        else:  # the API takes a fingerprint only with an ip; the comet_token identifies anyway
            del event["fingerprint"]
    if client.user_agent:
        event["user_agent"] = client.user_agent
    event["comet_token"] = client.comet_token
    event["event_time"] = event_time(sent.get("event_time"), now)
    # The snippet sends no unknown fields; a batch of 50 forged events gets few hints.
    checked, errors = rules.validate(event, custom_events, hints=1)
    if "idempotency_key" in errors:
        errors["event_id"] = errors.pop("idempotency_key")
    return checked, errors
