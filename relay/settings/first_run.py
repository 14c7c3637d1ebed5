"""The embedded default: the relay.toml that `comet-relay serve` writes on its first start."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import replace

from relay.auth import api_keys as keys
from relay.errors import ConfigError
from relay.settings.load import load
from relay.settings.model import CONFIG_NAME, DEFAULT_DATA_DIR, Settings


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
