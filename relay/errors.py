"""Every exception the relay raises on purpose, in one tree.

    RelayError                  the base: something the relay expected could go wrong
    ├── ConfigError             relay.toml or the environment is wrong; lists every problem
    ├── Unavailable             a store (SQLite, Redis) cannot be reached or cannot write
    ├── MigrationError          `outbox migrate` cannot start; the message says what to do
    └── Refused                 a request the relay will not accept; `status` is its HTTP status
        ├── Unauthorized        401  no key, a malformed one, or an unknown one
        ├── Forbidden           403  the key may not write, the Space is inactive, the origin
        │                            is not allowed
        ├── BodyTimeout         408  the body did not arrive in time
        ├── PayloadTooLarge     413  the body, or the batch, is too large
        ├── Invalid             422  the event breaks the contract; `errors` names each field
        ├── RateLimited         429  over a limit; the answer carries Retry-After
        └── ServiceUnavailable           503  the store failed; nothing was accepted, retry

Only a `Refused` has an HTTP status: `relay.routes.errors` turns it into the answer, in one
place for every route. Every message says what the sender or the operator should do.
"""

from __future__ import annotations

from collections.abc import Mapping


class RelayError(Exception):
    """The base of every error the relay raises on purpose; `message` is for a human."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RelayError):
    """A configuration problem found at start-up; `problems` names each one for a human."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} configuration problem(s):\n{lines}")


class Unavailable(RelayError):
    """A store could not be reached or could not write: nothing was made durable."""


class MigrationError(RelayError):
    """`comet-relay outbox migrate` cannot start; the message says why and what to do."""


class Refused(RelayError):
    """A request the relay will not accept: an HTTP status, a message for whoever sent it,
    `errors` (field -> problems) for a 422, and headers the answer must carry."""

    status = 400

    def __init__(
        self,
        message: str,
        *,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers) if headers else {}

    def body(self) -> dict[str, object]:
        """The JSON body of the answer."""
        body: dict[str, object] = {"message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class Unauthorized(Refused):
    """401: no API key, a malformed one, or one that is not configured."""

    status = 401


class Forbidden(Refused):
    """403: the key may not write, the Space is inactive, or the origin is not allowed."""

    status = 403


class BodyTimeout(Refused):
    """408: the body did not arrive in time. The answer closes the connection."""

    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The request body did not arrive within {seconds:g} s: send it at once.",
            headers={"Connection": "close"},
        )


class PayloadTooLarge(Refused):
    """413: the body, or the batch in it, is over the configured limit."""

    status = 413


class Invalid(Refused):
    """422: the request was understood but breaks the contract; `errors` lists every problem."""

    status = 422


class RateLimited(Refused):
    """429: over a rate limit; the answer says when to retry (Retry-After)."""

    status = 429


class ServiceUnavailable(Refused):
    """503: the relay could not make the event durable; the sender should retry."""

    status = 503


class Disconnected(Refused):
    """The client went away before sending the whole body: nothing was accepted, and the
    answer has nobody to read it."""

    status = 400

    def __init__(self) -> None:
        super().__init__("The client went away before sending the whole body.")
