"""Reading relay.toml and the RELAY_* environment variables into `Settings`, naming every
problem at once."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from relay.auth import api_keys as keys
from relay.errors import ConfigError
from relay.settings.checks import (
    RELAY_CHECKS,
    SPACE_CHECKS,
    check_table,
    report,
    show,
    toml_table,
)
from relay.settings.model import (
    MIN_SECRET_KEY_LENGTH,
    RESERVED_PATHS,
    SPACE_ID,
    Settings,
    Space,
    is_redis_url,
    stub_path,
)


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
    top, found = check_table(document, {"relay": toml_table, "spaces": toml_table})
    report("", found, problems)
    relay_table = top.get("relay", {})
    relay, found = check_table(relay_table, RELAY_CHECKS)
    report("relay", found, problems)

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
            problems.append(f"{name}: must be a table ([{name}]), got {show(raw)}")
            continue
        values, found = check_table(raw, SPACE_CHECKS)
        report(name, found, problems)
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
    snippet_path = relay.get("snippet_path", Settings.snippet_path)
    named = [("snippet_path", snippet_path)]
    if isinstance(snippet_path, str):
        named.append(("snippet_path's stub", stub_path(snippet_path)))
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
        if not is_redis_url(value):
            problems.append(f"{name}: must be a file path or a redis:// URL, got {show(value)}")
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
