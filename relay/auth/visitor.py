"""The visitor token: a random visitor id, signed by the relay, kept in a first-party cookie.

The cookie holds `itsdangerous.URLSafeTimedSerializer(secret_keys, salt="comet-visitor")`
over the visitor id. The newest secret key (the last) signs; every key verifies, so adding a
key rotates without logging visitors out. The signature carries the time it was made and the
cookie is re-signed on each visit, so a token expires `MAX_AGE_SECONDS` after the last visit.

`comet_token`, as sent upstream, is the visitor id itself, not the signed cookie value: the
id stays the same across visits and key rotations, while the signed value changes every time
it is re-signed.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

SALT = "comet-visitor"
MAX_AGE_SECONDS = 400 * 24 * 3600  # what browsers allow a cookie at most (Chrome caps here)
_VISITOR_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True)
class Visit:
    """The visitor of one request: its id, the cookie value to set, and whether it is new."""

    visitor_id: str
    cookie: str
    new: bool


def new_visitor_id() -> str:
    """A random visitor id: 16 bytes, URL-safe base64 (22 characters)."""
    return secrets.token_urlsafe(16)


class VisitorTokens:
    """Issues and verifies visitor tokens; pure apart from the injected clock and randomness."""

    def __init__(
        self,
        secret_keys: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        max_age_seconds: int = MAX_AGE_SECONDS,
        new_id: Callable[[], str] = new_visitor_id,
    ) -> None:
        if not secret_keys:
            raise ValueError("visitor tokens need at least one secret key")
        self.max_age_seconds = max_age_seconds
        self._new_id = new_id

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self._serializer = URLSafeTimedSerializer(list(secret_keys), salt=SALT, signer=_Signer)

    def issue(self, visitor_id: str) -> str:
        """The signed cookie value for `visitor_id`, signed now with the newest key."""
        return self._serializer.dumps(visitor_id)

    def verify(self, token: str | None) -> str | None:
        """The visitor id in `token`, or None if it is missing, tampered, expired or foreign."""
        if not token:
            return None
        try:
            value = self._serializer.loads(token, max_age=self.max_age_seconds)
        except BadData:  # bad signature, expired, signed in the future, malformed
            return None
        if not isinstance(value, str) or not _VISITOR_ID.fullmatch(value):
            return None
        return value

    def visit(self, token: str | None) -> Visit:
        """The visitor of a request whose cookie holds `token`: kept if valid, else a new one.

        Either way the returned cookie is freshly signed, so each visit extends its life.
        """
        visitor_id = self.verify(token)
        new = visitor_id is None
        if visitor_id is None:
            visitor_id = self._new_id()
        return Visit(visitor_id, self.issue(visitor_id), new)


def cookie_header(
    name: str, value: str, *, secure: bool, domain: str | None, max_age: int = MAX_AGE_SECONDS
) -> str:
    """The Set-Cookie value for the visitor cookie: HttpOnly, SameSite=Lax, Path=/.

    `value` must be cookie-safe as it is (a signed token is: URL-safe base64 and dots).
    """
    parts = [f"{name}={value}", f"Max-Age={max_age}", "Path=/", "HttpOnly", "SameSite=Lax"]
    if domain:
        parts.append(f"Domain={domain}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
