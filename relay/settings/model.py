"""The settings as the rest of the relay sees them: frozen dataclasses, read once at start-up.

No module reads the environment: `relay.settings.load` takes it as a mapping, and everything
else receives the resulting `Settings`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from relay.auth.api_keys import EVENTS_WRITE

DEFAULT_UPSTREAM_URL = "https://app.cometly.com/public-api/v1/events/track"
CONFIG_NAME = "relay.toml"
TRACK_PATH = "/public-api/v1/events/track"
# Paths the relay serves whatever the configuration says; a browser path may not take one.
RESERVED_PATHS: Mapping[str, str] = MappingProxyType(
    {
        TRACK_PATH: "the Create Event API",
        "/healthz": "the health check",
        "/openapi.json": "the OpenAPI document",
        "/demo": "the demo page",
        "/metrics": "the Prometheus metrics",
        "/readyz": "the readiness check",
        "/debug": "the event debugger",
    }
)
DEFAULT_DATA_DIR = "comet-data"
MIN_SECRET_KEY_LENGTH = 16
# A shop's backend often posts a purchase a second before the thank-you page fires the pixel,
# and a payment webhook often arrives a few seconds after it: a minute catches both.
DEFAULT_TWIN_WINDOW_SECONDS = 60.0
MAX_TWIN_WINDOW_SECONDS = 3600.0
SPACE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class ApiKey:
    """One API key of a Space, known only by the hex SHA-256 of the key."""

    sha256: str
    permissions: frozenset[str] = frozenset({EVENTS_WRITE})


@dataclass(frozen=True)
class Space:
    """A Space: one site or business whose events share keys, limits and an upstream."""

    id: str
    active: bool = True
    rate_limit_per_minute: int = 1000
    custom_events: frozenset[str] = frozenset()
    site_key: str | None = None
    allowed_origins: tuple[str, ...] = ()
    upstream_url: str | None = None
    upstream_token_env: str | None = None
    upstream_token: str | None = field(default=None, repr=False)
    upstream_rate_per_minute: int = 1000
    dedup_window_hours: float = 48.0
    # How long a conversion waits for its twin from the other source (0: not at all), and
    # which keys pair twins: "key_and_order", "key" or "off" (relay.rules.events.TwinMatch).
    twin_window_seconds: float = DEFAULT_TWIN_WINDOW_SECONDS
    twin_match: str = "key_and_order"
    api_keys: tuple[ApiKey, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything the relay needs to run, read once at start-up."""

    database: str = "relay.db"
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    dedup_window_hours: float = 48.0
    max_body_bytes: int = 65536
    body_timeout_seconds: float = 30.0  # the whole body must arrive within this (slow loris)
    # forwarder (issue 3)
    upstream_timeout_seconds: float = 10.0
    max_event_age_hours: float = 72.0
    delivered_retention_days: float = 7.0
    # the browser side (issue 4)
    snippet_path: str = "/comet.js"
    snippet_aliases: tuple[str, ...] = ()
    collect_path: str = "/e"
    cookie_name: str = "_comet"
    cookie_domain: str | None = None
    browser_rate_limit_per_minute: int = 600
    max_batch_events: int = 50
    demo: bool = False  # serve /demo; only the embedded default sets it
    # observability (issue 6)
    log_format: str = "text"  # "json": one JSON object per log line
    admin_token_env: str | None = None
    admin_token: str | None = field(default=None, repr=False)  # from $admin_token_env
    metrics_multiproc_dir: str | None = None  # $PROMETHEUS_MULTIPROC_DIR: workers share metrics
    workers: int = 1  # `serve`'s HTTP worker processes (issue 15); --workers overrides it
    spaces: Mapping[str, Space] = field(default_factory=dict)
    source: str = "<defaults>"

    @property
    def stub_path(self) -> str:
        """Where the tag's first line is served as a file: beside snippet_path (`stub_path`)."""
        return stub_path(self.snippet_path)


REDIS_SCHEMES = ("redis://", "rediss://")


def stub_path(snippet_path: str) -> str:
    """The stub line's path beside the snippet's: `-stub` before its `.js` (/comet.js ->
    /comet-stub.js), for a page whose Content-Security-Policy allows no inline script."""
    return snippet_path.removesuffix(".js") + "-stub.js"


def is_redis_url(database: str) -> bool:
    """Whether a `database` setting names a Redis (else it is a SQLite file path)."""
    return database.startswith(REDIS_SCHEMES)
