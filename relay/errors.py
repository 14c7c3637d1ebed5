"""One error base class; `app.py` maps it to an HTTP answer in one place."""

from __future__ import annotations

from collections.abc import Mapping


class RelayError(Exception):
    """An error with an HTTP status and a message meant for whoever sent the request."""

    status = 400

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers) if headers else {}

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class Unauthorized(RelayError):
    status = 401


class Forbidden(RelayError):
    status = 403


class PayloadTooLarge(RelayError):
    status = 413


class Invalid(RelayError):
    """422: the request was understood but breaks the contract; `errors` lists every problem."""

    status = 422


class RateLimited(RelayError):
    status = 429


class Unavailable(RelayError):
    """503: the relay could not make the event durable; the sender should retry."""

    status = 503


class ConfigError(Exception):
    """A configuration problem found at start-up; `problems` names each one for a human."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} configuration problem(s):\n{lines}")
