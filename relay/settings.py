"""Frozen settings, built once from relay.toml and RELAY_* environment variables.

No other module reads the environment: `load()` takes it as a mapping and everything else
receives the resulting `Settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_UPSTREAM_URL = "https://app.cometly.com/public-api/v1/events/track"
EVENTS_WRITE = "events:write"


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
    api_keys: tuple[ApiKey, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything the relay needs to run, read once at start-up."""

    database: str = "relay.db"
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    dedup_window_hours: float = 48.0
    max_body_bytes: int = 65536
    # forwarder (issue 3)
    upstream_timeout_seconds: float = 10.0
    max_event_age_hours: float = 72.0
    delivered_retention_days: float = 7.0
    spaces: Mapping[str, Space] = field(default_factory=dict)
    source: str = "<defaults>"
