"""Frozen settings, built once from relay.toml and RELAY_* environment variables.

No other module reads the environment: `load()` takes it as a mapping and everything else
receives the resulting `Settings`.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from relay import keys
from relay.errors import ConfigError
from relay.keys import EVENTS_WRITE

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
    spaces: Mapping[str, Space] = field(default_factory=dict)
    source: str = "<defaults>"


# --- loading relay.toml --------------------------------------------------------------------

Problem = tuple[str, str]  # (where, relative to the table being read; message)
Check = Callable[[Any], Any]


class _Bad(Exception):
    """Raised by a check: one or more problems, each placed relative to the checked value."""

    def __init__(self, message: str = "", problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [("", message)]


def load(path: str, env: Mapping[str, str], *, secrets: bool = True) -> Settings:
    """Read the relay.toml at `path`, apply RELAY_* overrides from `env`, and check everything.

    Raises `ConfigError(path, problems)` naming every problem found, not only the first.
    A relative `database` path is taken relative to the directory of `path`. With
    `secrets=False` (commands that only read or repair the outbox) a missing upstream token
    or secret key is not a problem; such settings must not serve or forward.
    """
    problems: list[str] = []
    document = _read_toml(path, problems)
    if document is None:
        raise ConfigError(path, problems)
    settings = _build(document, path, env, problems, secrets)
    if problems:
        raise ConfigError(path, problems)
    return settings


def _read_toml(path: str, problems: list[str]) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        problems.append("cannot read the file: it does not exist")
    except IsADirectoryError:
        problems.append("cannot read the file: it is a directory")
    except OSError as exc:
        problems.append(f"cannot read the file: {exc.strerror or exc}")
    except UnicodeDecodeError:
        problems.append("cannot read the file: it is not UTF-8 text")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"TOML syntax error: {exc}")
    return None


def _build(
    document: dict[str, Any],
    path: str,
    env: Mapping[str, str],
    problems: list[str],
    secrets: bool = True,
) -> Settings:
    top, found = _fields(document, {"relay": _table, "spaces": _table})
    _report("", found, problems)
    relay_table = top.get("relay", {})
    relay, found = _fields(relay_table, _RELAY_CHECKS)
    _report("relay", found, problems)

    relay_dedup = relay.get("dedup_window_hours", Settings.dedup_window_hours)
    spaces = _spaces(top.get("spaces", {}), relay_dedup, env, problems, secrets)
    if not top.get("spaces") and isinstance(document.get("spaces", {}), dict):
        problems.append("spaces: no Space is configured; add a [spaces.ID] table")
    _check_unique(spaces, problems)

    config_dir = os.path.dirname(os.path.abspath(path))
    database = relay.get("database", Settings.database)
    relay["database"] = _database(database, config_dir, env, problems)
    secret_keys = _secret_keys(_file_secret_keys(document, relay), env, problems if secrets else [])
    relay["secret_keys"] = secret_keys
    _check_paths(relay, problems)
    relay["admin_token"] = _admin_token(
        relay.get("admin_token_env"), env, problems if secrets else []
    )
    relay["metrics_multiproc_dir"] = env.get("PROMETHEUS_MULTIPROC_DIR") or None
    return Settings(**relay, spaces=MappingProxyType(spaces), source=path)


def _admin_token(name: str | None, env: Mapping[str, str], problems: list[str]) -> str | None:
    """The debugger's admin token from $`name`; a named but unset or short variable is a problem."""
    if name is None:
        return None
    token = env.get(name, "")
    if len(token) < MIN_SECRET_KEY_LENGTH:
        problems.append(
            f"relay.admin_token_env: ${name} must hold a token of at least "
            f"{MIN_SECRET_KEY_LENGTH} characters"
        )
        return None
    return token


def _log_format(value: Any) -> str:
    if value not in ("text", "json"):
        raise _Bad(f'must be "text" or "json", got {_show(value)}')
    return str(value)


def _file_secret_keys(
    document: Mapping[str, Any], relay: Mapping[str, Any]
) -> tuple[str, ...] | None:
    """The file's secret keys, or None when [relay] or its secret_keys is unusable.

    That problem is reported already, so "no secret key" on top of it would be noise.
    """
    raw = document.get("relay", {})
    if not isinstance(raw, dict) or ("secret_keys" in raw and "secret_keys" not in relay):
        return None
    return relay.get("secret_keys", ())


def _report(prefix: str, found: Iterable[Problem], problems: list[str]) -> None:
    problems.extend(f"{(prefix + where).lstrip('.')}: {message}" for where, message in found)


def _fields(
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
        except _Bad as bad:
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


def _show(value: Any) -> str:
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


# --- checks of single values: each returns the value to keep or raises _Bad ----------------


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"must be a table, got {_show(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {_show(value)}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Bad(f"must be a positive integer, got {_show(value)}")
    return value


def _positive_number(value: Any) -> float:
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not number_ok or not math.isfinite(value) or value <= 0:
        raise _Bad(f"must be a positive number, got {_show(value)}")
    return float(value)


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad(f"must be a non-empty string, got {_show(value)}")
    return value


def _each(check: Check) -> Check:
    """A check of a list whose items each pass `check`; problems are placed as `[i]`."""

    def check_list(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Bad(f"must be a list, got {_show(value)}")
        items: list[Any] = []
        problems: list[Problem] = []
        for index, item in enumerate(value):
            try:
                items.append(check(item))
            except _Bad as bad:
                problems.extend((f"[{index}]{where}", message) for where, message in bad.problems)
        if problems:
            raise _Bad(problems=problems)
        return tuple(items)

    return check_list


def _secret_list(value: Any) -> tuple[str, ...]:
    # Never shows the value: these are secrets.
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Bad("must be a list of strings")
    return tuple(value)


def _proxy(value: Any) -> str:
    text = _string(value)
    if text == "*":
        raise _Bad('"*" (trust every peer) must be the only entry')
    try:
        if "/" in text:
            ipaddress.ip_network(text)
        else:
            ipaddress.ip_address(text)
    except ValueError as exc:
        raise _Bad(f"must be an IP address or a CIDR network ({exc})") from None
    return text


def _trusted_proxies(value: Any) -> tuple[str, ...]:
    if value == ["*"]:
        return ("*",)  # uvicorn's "trust every peer"; only meaningful alone
    return _each(_proxy)(value)


def _custom_event(value: Any) -> str:
    match = re.fullmatch(r"custom_event_([1-9][0-9]?)", value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) > 50:
        raise _Bad(f"must be one of custom_event_1 ... custom_event_50, got {_show(value)}")
    return value


def _custom_events(value: Any) -> frozenset[str]:
    return frozenset(_each(_custom_event)(value))


def _site_key(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", value):
        raise _Bad(f"must be letters, digits, '_' and '-' (1 to 128), got {_show(value)}")
    return value


_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: Any) -> str:
    """An Origin as browsers send it: scheme://host[:port], lowercased, default port dropped."""
    match = _ORIGIN.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(3) or 1) > 65535:
        raise _Bad(f"must be scheme://host[:port] (http or https, no path), got {_show(value)}")
    scheme, host, port = match.group(1).lower(), match.group(2).lower(), match.group(3)
    keep_port = port is not None and int(port) != _DEFAULT_PORTS[scheme]
    return f"{scheme}://{host}:{int(port)}" if keep_port else f"{scheme}://{host}"


def _upstream_url(value: Any) -> str:
    problem = _Bad(f"must be an http:// or https:// URL, got {_show(value)}")
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
        raise _Bad(f"must be the name of an environment variable, got {_show(value)}")
    return value


def _sha256(value: Any) -> str:
    # Never shows the value: a plaintext key pasted here by mistake must not be printed.
    if not isinstance(value, str):
        raise _Bad(f"must be a string of 64 hex characters, got {_show(value)}")
    if value.startswith(keys.KEY_PREFIX):
        raise _Bad("holds a plaintext API key; put its SHA-256 here (see comet-relay keys new)")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise _Bad(f"must be 64 hex characters (a SHA-256), got {len(value)} characters")
    return value.lower()


def _permission(value: Any) -> str:
    # Any resource:action is allowed (a key without events:write is valid and gets 403).
    if not isinstance(value, str) or not re.fullmatch(r"[a-z_]+:[a-z_]+", value):
        raise _Bad(f'must be a permission such as "{EVENTS_WRITE}", got {_show(value)}')
    return value


def _permissions(value: Any) -> frozenset[str]:
    return frozenset(_each(_permission)(value))


_API_KEY_CHECKS: dict[str, Check] = {"sha256": _sha256, "permissions": _permissions}


_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def _path(value: Any) -> str:
    """A URL path the relay serves: starts with '/', no query, fragment or spaces."""
    if not isinstance(value, str) or not _PATH.fullmatch(value) or value == "/":
        raise _Bad(
            f'must be a path such as "/e" (starts with "/", no spaces, "?" or "#"), got {_show(value)}'
        )
    return value


def _cookie_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}", value):
        raise _Bad(
            f"must be a cookie name (letters, digits and !#$%&'*+-.^_`|~, 1 to 64), got {_show(value)}"
        )
    return value


def _cookie_domain(value: Any) -> str:
    name = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    if not isinstance(value, str) or not re.fullmatch(rf"\.?{name}(?:\.{name})*", value):
        raise _Bad(f'must be a domain name such as "example.com", got {_show(value)}')
    return value.lower()


def _api_keys(value: Any) -> tuple[ApiKey, ...]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _Bad("must be an array of tables, written as [[spaces.ID.api_keys]] blocks")
    found: list[ApiKey] = []
    problems: list[Problem] = []
    for index, item in enumerate(value):
        values, item_problems = _fields(item, _API_KEY_CHECKS, required=("sha256",))
        problems.extend((f"[{index}]{where}", message) for where, message in item_problems)
        if not item_problems:
            found.append(ApiKey(**values))
    if problems:
        raise _Bad(problems=problems)
    return tuple(found)


_RELAY_CHECKS: dict[str, Check] = {
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
    "log_format": _log_format,
    "admin_token_env": _env_name,
}

_SPACE_CHECKS: dict[str, Check] = {
    "active": _boolean,
    "rate_limit_per_minute": _positive_int,
    "custom_events": _custom_events,
    "site_key": _site_key,
    "allowed_origins": _each(_origin),
    "upstream_url": _upstream_url,
    "upstream_token_env": _env_name,
    "upstream_rate_per_minute": _positive_int,
    "dedup_window_hours": _positive_number,
    "api_keys": _api_keys,
}


# --- Spaces and the checks that span several keys ------------------------------------------


def _spaces(
    table: Mapping[str, Any],
    relay_dedup: float,
    env: Mapping[str, str],
    problems: list[str],
    secrets: bool = True,
) -> dict[str, Space]:
    spaces: dict[str, Space] = {}
    for space_id, raw in table.items():
        name = f"spaces.{keys.toml_key(space_id)}"
        if not SPACE_ID.fullmatch(space_id):
            problems.append(f"{name}: a Space id may hold only letters, digits, '_' and '-'")
        if not isinstance(raw, dict):
            problems.append(f"{name}: must be a table ([{name}]), got {_show(raw)}")
            continue
        values, found = _fields(raw, _SPACE_CHECKS)
        _report(name, found, problems)
        token = _upstream_token(name, raw, values, env, problems if secrets else [])
        values.setdefault("dedup_window_hours", relay_dedup)
        spaces[space_id] = Space(id=space_id, **values, upstream_token=token)
    return spaces


def _upstream_token(
    name: str,
    raw: Mapping[str, Any],
    values: Mapping[str, Any],
    env: Mapping[str, str],
    problems: list[str],
) -> str | None:
    """The token named by upstream_token_env; its absence is a problem only with an upstream."""
    env_name = values.get("upstream_token_env")
    token = (env.get(env_name) or None) if env_name else None
    if "upstream_url" not in values or token is not None:
        return token
    if "upstream_token_env" not in raw:
        problems.append(
            f"{name}.upstream_token_env: required when upstream_url is set; name the"
            " environment variable that holds the upstream API token"
        )
    elif env_name:
        problems.append(
            f"{name}.upstream_token_env: the environment variable {env_name} is not set"
            " (it must hold the upstream API token, since upstream_url is set)"
        )
    return None


def _check_unique(spaces: Mapping[str, Space], problems: list[str]) -> None:
    """A site key, or an API key, may belong to one Space only."""
    site_keys: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for space in spaces.values():
        name = f"spaces.{keys.toml_key(space.id)}"
        if space.site_key is not None:
            owner = site_keys.setdefault(space.site_key, space.id)
            if owner != space.id:
                problems.append(
                    f'{name}.site_key: "{space.site_key}" is already the site key of Space "{owner}"'
                )
        for index, api_key in enumerate(space.api_keys):
            owner = hashes.setdefault(api_key.sha256, space.id)
            if owner != space.id:
                problems.append(
                    f"{name}.api_keys[{index}].sha256: the same key is already configured for"
                    f' Space "{owner}"'
                )


def _check_paths(relay: Mapping[str, Any], problems: list[str]) -> None:
    """The browser paths differ from each other and from the paths the relay always serves."""
    taken: dict[str, str] = dict(RESERVED_PATHS)
    named = [("snippet_path", relay.get("snippet_path", Settings.snippet_path))]
    named += [(f"snippet_aliases[{i}]", p) for i, p in enumerate(relay.get("snippet_aliases", ()))]
    named.append(("collect_path", relay.get("collect_path", Settings.collect_path)))
    for name, path in named:
        owner = taken.setdefault(path, f"relay.{name}")
        if owner != f"relay.{name}":
            problems.append(
                f'relay.{name}: "{path}" is already the path of {owner}; choose another'
            )


def _database(value: str, config_dir: str, env: Mapping[str, str], problems: list[str]) -> str:
    """The database URL or absolute SQLite path; RELAY_DATABASE wins over the file.

    A relative path in the file is relative to the file's directory; a relative path in
    RELAY_DATABASE is relative to the working directory, like any path given on a command line.
    """
    name, base = "relay.database", config_dir
    if env.get("RELAY_DATABASE"):
        name, value, base = "RELAY_DATABASE", env["RELAY_DATABASE"], os.getcwd()
    if "://" in value:
        if not value.startswith(("redis://", "rediss://")):
            problems.append(f"{name}: must be a file path or a redis:// URL, got {_show(value)}")
        return value
    if value == ":memory:":
        return value
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _secret_keys(
    from_file: tuple[str, ...] | None, env: Mapping[str, str], problems: list[str]
) -> tuple[str, ...]:
    """The secret keys, newest last; RELAY_SECRET_KEYS (comma-separated) wins over the file.

    `from_file` is None when the file's value was unusable (a problem reported already).
    """
    name, found = "relay.secret_keys", from_file
    if env.get("RELAY_SECRET_KEYS", "").strip():
        name = "RELAY_SECRET_KEYS"
        found = tuple(key.strip() for key in env["RELAY_SECRET_KEYS"].split(",") if key.strip())
    if found is None:
        return ()
    if not found:
        problems.append(
            f"{name}: at least one secret key is required (or set RELAY_SECRET_KEYS); make one"
            " with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    for index, key in enumerate(found):
        if len(key) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"{name}[{index}]: a secret key needs at least {MIN_SECRET_KEY_LENGTH}"
                f" characters, this one has {len(key)}"
            )
    return found


# --- the embedded default --------------------------------------------------------------------


def default_data_dir(env: Mapping[str, str]) -> str:
    """Where the embedded default lives: RELAY_DATA_DIR, or ./comet-data."""
    return env.get("RELAY_DATA_DIR") or DEFAULT_DATA_DIR


def embedded_default(
    data_dir: str, env: Mapping[str, str], host: str, port: int
) -> tuple[Settings, str | None]:
    """The settings of `<data_dir>/relay.toml`, writing that file first if it does not exist.

    The written file is an ordinary relay.toml (mode 0600): a generated secret key, the
    database inside `data_dir`, and a Space "demo" with a generated site key, origins for
    localhost:`port` and one API key stored as its SHA-256. Returns the settings and the demo
    API key in plain text, the latter only when this call created the file (None otherwise).
    The settings have `demo` set, so the relay serves its demo page.
    """
    path = os.path.join(data_dir, CONFIG_NAME)
    api_key = None
    if not os.path.exists(path):
        api_key = keys.new_key()
        try:
            created = _write_new(path, _default_toml(keys.hash_key(api_key), port))
        except OSError as exc:
            problem = f"cannot create the default config: {exc.strerror or exc}"
            raise ConfigError(path, [problem]) from None
        api_key = api_key if created else None
    return replace(load(path, env), demo=True), api_key


def _write_new(path: str, text: str) -> bool:
    """Write `text` to a new file at `path` (mode 0600); False if the file already exists."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False  # another process won the race; its file is as good as ours
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return True


def _default_toml(key_hash: str, port: int) -> str:
    secret = secrets.token_urlsafe(32)
    site_key = "pk_demo_" + secrets.token_urlsafe(12)
    return f"""\
# comet-relay configuration, written on the first start of `comet-relay serve`.
# It is an ordinary relay.toml: edit it, then validate it with `comet-relay check --config`.

[relay]
database = "relay.db"                # next to this file
secret_keys = ["{secret}"]  # add a new key last to rotate
trusted_proxies = ["127.0.0.1"]
dedup_window_hours = 48
max_body_bytes = 65536
snippet_path = "/comet.js"           # the script tag's src; add snippet_aliases to dodge blocklists
collect_path = "/e"                  # where the snippet sends events
browser_rate_limit_per_minute = 600  # per client IP

[spaces.demo]
active = true
rate_limit_per_minute = 1000
custom_events = []
site_key = "{site_key}"
allowed_origins = ["http://localhost:{port}", "http://127.0.0.1:{port}"]
# No upstream_url yet: events stay queued until one is set here, together with
# upstream_token_env, the name of the environment variable holding the upstream API token.
upstream_rate_per_minute = 1000

# The demo API key was printed once, on first start; only its SHA-256 is kept.
# Add another with `comet-relay keys new --space demo`.
{keys.toml_lines("demo", key_hash)}"""
