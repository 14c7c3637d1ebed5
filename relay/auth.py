"""API keys: found by their SHA-256, compared in constant time, never stored in clear."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from relay.errors import Forbidden, Unauthorized
from relay.settings import EVENTS_WRITE, ApiKey, Space

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
