"""The small checking framework behind relay.toml's problems, and the check of each value.

A check takes a configured value and returns what to keep, or raises `Bad` with one or more
problems placed relative to the value (`[2]`, `.sha256`); `check_table` runs a table of checks
over a TOML table and names unknown keys with a "did you mean". Every message shows the value
it refuses (`show`), except for secrets.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from relay.auth import api_keys as keys
from relay.auth.api_keys import EVENTS_WRITE
from relay.rules.events import TwinMatch
from relay.settings.model import MAX_TWIN_WINDOW_SECONDS, ApiKey

Problem = tuple[str, str]  # (where, relative to the table being read; message)
Check = Callable[[Any], Any]


class Bad(Exception):
    """Raised by a check: one or more problems, each placed relative to the checked value."""

    def __init__(self, message: str = "", problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [("", message)]



def report(prefix: str, found: Iterable[Problem], problems: list[str]) -> None:
    problems.extend(f"{(prefix + where).lstrip('.')}: {message}" for where, message in found)


def check_table(
    table: Mapping[str, Any], checks: Mapping[str, Check], required: Iterable[str] = ()
) -> tuple[dict[str, Any], list[Problem]]:
    """Run `checks` over `table`: the values that passed, and every problem (unknown keys too)."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, raw in table.items():
        check = checks.get(key)
        if check is None:
            problems.append((f".{keys.toml_key(key)}", _unknown_key(key, checks)))
            continue
        try:
            values[key] = check(raw)
        except Bad as bad:
            problems.extend(
                (f".{keys.toml_key(key)}{where}", message) for where, message in bad.problems
            )
    problems.extend((f".{key}", "required") for key in required if key not in table)
    return values, problems


def _unknown_key(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if close:
        return f'unknown key; did you mean "{close[0]}"?'
    return "unknown key; known keys are " + ", ".join(sorted(known))


def show(value: Any) -> str:
    """A short rendering of a configured value for a problem message (never for secrets)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str | list):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def log_format(value: Any) -> str:
    if value not in ("text", "json"):
        raise Bad(f'must be "text" or "json", got {show(value)}')
    return str(value)


# --- checks of single values: each returns the value to keep or raises Bad ----------------


def toml_table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Bad(f"must be a table, got {show(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"must be true or false, got {show(value)}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise Bad(f"must be a positive integer, got {show(value)}")
    return value


def _positive_number(value: Any) -> float:
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not number_ok or not math.isfinite(value) or value <= 0:
        raise Bad(f"must be a positive number, got {show(value)}")
    return float(value)


def _twin_window(value: Any) -> float:
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not number_ok or not 0 <= value <= MAX_TWIN_WINDOW_SECONDS:
        raise Bad(
            f"must be a number of seconds from 0 (no hold) to {MAX_TWIN_WINDOW_SECONDS:g}, "
            f"got {show(value)}"
        )
    return float(value)


_TWIN_MATCHES = tuple(match.value for match in TwinMatch)


def _twin_match(value: Any) -> str:
    if value not in _TWIN_MATCHES:
        raise Bad(f"must be one of {', '.join(map(json.dumps, _TWIN_MATCHES))}, got {show(value)}")
    return str(value)


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Bad(f"must be a non-empty string, got {show(value)}")
    return value


def _each(check: Check) -> Check:
    """A check of a list whose items each pass `check`; problems are placed as `[i]`."""

    def check_list(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise Bad(f"must be a list, got {show(value)}")
        items: list[Any] = []
        problems: list[Problem] = []
        for index, item in enumerate(value):
            try:
                items.append(check(item))
            except Bad as bad:
                problems.extend((f"[{index}]{where}", message) for where, message in bad.problems)
        if problems:
            raise Bad(problems=problems)
        return tuple(items)

    return check_list


def _secret_list(value: Any) -> tuple[str, ...]:
    # Never shows the value: these are secrets.
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Bad("must be a list of strings")
    return tuple(value)


def _proxy(value: Any) -> str:
    text = _string(value)
    if text == "*":
        raise Bad('"*" (trust every peer) must be the only entry')
    try:
        if "/" in text:
            ipaddress.ip_network(text)
        else:
            ipaddress.ip_address(text)
    except ValueError as exc:
        raise Bad(f"must be an IP address or a CIDR network ({exc})") from None
    return text


def _trusted_proxies(value: Any) -> tuple[str, ...]:
    if value == ["*"]:
        return ("*",)  # uvicorn's "trust every peer"; only meaningful alone
    return _each(_proxy)(value)


def _custom_event(value: Any) -> str:
    match = re.fullmatch(r"custom_event_([1-9][0-9]?)", value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) > 50:
        raise Bad(f"must be one of custom_event_1 ... custom_event_50, got {show(value)}")
    return value


def _custom_events(value: Any) -> frozenset[str]:
    return frozenset(_each(_custom_event)(value))


def _site_key(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", value):
        raise Bad(f"must be letters, digits, '_' and '-' (1 to 128), got {show(value)}")
    return value


_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: Any) -> str:
    """An Origin as browsers send it: scheme://host[:port], lowercased, default port dropped."""
    match = _ORIGIN.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(3) or 1) > 65535:
        raise Bad(f"must be scheme://host[:port] (http or https, no path), got {show(value)}")
    scheme, host, port = match.group(1).lower(), match.group(2).lower(), match.group(3)
    keep_port = port is not None and int(port) != _DEFAULT_PORTS[scheme]
    return f"{scheme}://{host}:{int(port)}" if keep_port else f"{scheme}://{host}"


def _upstream_url(value: Any) -> str:
    problem = Bad(f"must be an http:// or https:// URL, got {show(value)}")
    if not isinstance(value, str):
        raise problem
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise problem from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem
    return value


def _env_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise Bad(f"must be the name of an environment variable, got {show(value)}")
    return value


def _sha256(value: Any) -> str:
    # Never shows the value: a plaintext key pasted here by mistake must not be printed.
    if not isinstance(value, str):
        raise Bad(f"must be a string of 64 hex characters, got {show(value)}")
    if value.startswith(keys.KEY_PREFIX):
        raise Bad("holds a plaintext API key; put its SHA-256 here (see comet-relay keys new)")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise Bad(f"must be 64 hex characters (a SHA-256), got {len(value)} characters")
    return value.lower()


def _permission(value: Any) -> str:
    # Any resource:action is allowed (a key without events:write is valid and gets 403).
    if not isinstance(value, str) or not re.fullmatch(r"[a-z_]+:[a-z_]+", value):
        raise Bad(f'must be a permission such as "{EVENTS_WRITE}", got {show(value)}')
    return value


def _permissions(value: Any) -> frozenset[str]:
    return frozenset(_each(_permission)(value))


_API_KEY_CHECKS: dict[str, Check] = {"sha256": _sha256, "permissions": _permissions}


_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def _path(value: Any) -> str:
    """A URL path the relay serves: starts with '/', no query, fragment or spaces."""
    if not isinstance(value, str) or not _PATH.fullmatch(value) or value == "/":
        raise Bad(
            f'must be a path such as "/e" (starts with "/", no spaces, "?" or "#"), got {show(value)}'
        )
    return value


def _cookie_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}", value):
        raise Bad(
            f"must be a cookie name (letters, digits and !#$%&'*+-.^_`|~, 1 to 64), got {show(value)}"
        )
    return value


def _cookie_domain(value: Any) -> str:
    name = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    if not isinstance(value, str) or not re.fullmatch(rf"\.?{name}(?:\.{name})*", value):
        raise Bad(f'must be a domain name such as "example.com", got {show(value)}')
    return value.lower()


def _api_keys(value: Any) -> tuple[ApiKey, ...]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise Bad("must be an array of tables, written as [[spaces.ID.api_keys]] blocks")
    found: list[ApiKey] = []
    problems: list[Problem] = []
    for index, item in enumerate(value):
        values, item_problems = check_table(item, _API_KEY_CHECKS, required=("sha256",))
        problems.extend((f"[{index}]{where}", message) for where, message in item_problems)
        if not item_problems:
            found.append(ApiKey(**values))
    if problems:
        raise Bad(problems=problems)
    return tuple(found)


RELAY_CHECKS: dict[str, Check] = {
    "database": _string,
    "secret_keys": _secret_list,
    "trusted_proxies": _trusted_proxies,
    "dedup_window_hours": _positive_number,
    "max_body_bytes": _positive_int,
    "body_timeout_seconds": _positive_number,
    "upstream_timeout_seconds": _positive_number,
    "max_event_age_hours": _positive_number,
    "delivered_retention_days": _positive_number,
    "snippet_path": _path,
    "snippet_aliases": _each(_path),
    "collect_path": _path,
    "cookie_name": _cookie_name,
    "cookie_domain": _cookie_domain,
    "browser_rate_limit_per_minute": _positive_int,
    "max_batch_events": _positive_int,
    "log_format": log_format,
    "admin_token_env": _env_name,
    "workers": _positive_int,
}

SPACE_CHECKS: dict[str, Check] = {
    "active": _boolean,
    "rate_limit_per_minute": _positive_int,
    "custom_events": _custom_events,
    "site_key": _site_key,
    "allowed_origins": _each(_origin),
    "upstream_url": _upstream_url,
    "upstream_token_env": _env_name,
    "upstream_rate_per_minute": _positive_int,
    "dedup_window_hours": _positive_number,
    "twin_window_seconds": _twin_window,
    "twin_match": _twin_match,
    "api_keys": _api_keys,
}
