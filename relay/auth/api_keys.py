"""API keys: made once and shown once, stored only as a SHA-256, checked in constant time.

A key is shown to its owner once; the relay's configuration holds only its hex SHA-256, so a
leaked relay.toml does not leak a usable key. A request's key is hashed and compared with
every configured hash, without an early exit, so the time taken tells nothing about which
key came close.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from relay.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from relay.settings import ApiKey, Space

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


# One message for a missing, malformed, wrong or revoked key: the answer must not tell an
# attacker which of these it was.
UNAUTHORIZED = (
    "Missing or invalid API key: send 'Authorization: Bearer <API key>' with a key of your Space."
)


class KeyRing:
    """Every Space's API keys, by hash."""

    def __init__(self, spaces: Iterable[Space]) -> None:
        self._keys = [
            (bytes.fromhex(key.sha256), space, key) for space in spaces for key in space.api_keys
        ]

    def authenticate(self, authorization: str | None) -> tuple[Space, ApiKey]:
        """The Space and key named by the `Authorization` header; raises 401."""
        token = _bearer_token(authorization)
        if token is None:
            raise Unauthorized(UNAUTHORIZED)
        digest = hashlib.sha256(token.encode()).digest()
        found: tuple[Space, ApiKey] | None = None
        for key_digest, space, key in self._keys:  # no early exit: time does not depend on which
            if hmac.compare_digest(key_digest, digest):
                found = (space, key)
        if found is None:
            raise Unauthorized(UNAUTHORIZED)
        return found


def authorize(space: Space, key: ApiKey, permission: str = EVENTS_WRITE) -> None:
    """Raise 403 unless the Space is active and the key holds `permission`."""
    if not space.active:
        raise Forbidden(f"The Space '{space.id}' is inactive: its subscription has ended.")
    if permission not in key.permissions:
        raise Forbidden(f"This API key lacks the '{permission}' permission.")


def _bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token
