"""API keys: how they are made, how they are stored (only as a SHA-256), how to configure one.

A key is shown to its owner once; the relay's configuration holds only its hex SHA-256, so a
leaked relay.toml does not leak a usable key.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets

KEY_PREFIX = "crk_"
EVENTS_WRITE = "events:write"

_BARE_TOML_KEY = re.compile(r"[A-Za-z0-9_-]+")


def new_key() -> str:
    """A new random API key: `crk_` followed by 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The lowercase hex SHA-256 of `key`, as stored in relay.toml and looked up on requests."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def toml_key(name: str) -> str:
    """`name` as one part of a dotted TOML key: bare where TOML allows it, quoted otherwise."""
    return name if _BARE_TOML_KEY.fullmatch(name) else json.dumps(name)


def toml_lines(space_id: str, key_hash: str) -> str:
    """The `[[spaces.ID.api_keys]]` block that configures the key with hash `key_hash`."""
    name = toml_key(space_id)
    return f'[[spaces.{name}.api_keys]]\nsha256 = "{key_hash}"\npermissions = ["{EVENTS_WRITE}"]\n'
