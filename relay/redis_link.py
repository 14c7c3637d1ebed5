"""One connection pool to Redis that runs Lua scripts, for every Redis backend of the relay.

The outbox, the shared rate limiter and the shared pacer each keep their state in scripts, so
that each step is atomic for all relays. A `RedisLink` runs them by SHA1 (EVALSHA), several in
one pipeline (one round trip), and loads a script again when Redis has lost it (a restart
without persistence, SCRIPT FLUSH).

Failures are `relay.errors.Unavailable`: Redis unreachable, a socket timeout, a script error.
Commands are never retried by the client: a script whose answer was lost may have run, and a
second run could apply it twice; the relay answers 503 and the sender retries instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from relay.errors import Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Script:
    """A Lua script, run by its SHA1."""

    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


Call = tuple[Script, Sequence[str], Sequence[Any]]  # script, KEYS, ARGV


def lua_source(package: str, path: str) -> str:
    """The text of the Lua file at `path` (e.g. "lua/claim.lua") inside `package`: package
    data, so an installed wheel has it too."""
    return importlib.resources.files(package).joinpath(path).read_text("utf-8")


def load_script(package: str, filename: str) -> Script:
    """The Lua script `filename` shipped beside the modules of `package`, named by the
    file's stem."""
    return Script(filename.removesuffix(".lua"), lua_source(package, filename))


class RedisLink:
    """A client for `url` that runs `scripts`.

    Start, use and close it in one event loop. It also works from successive loops (a new
    client per loop), but the connections of a loop that has ended cannot be closed any
    more: they are dropped, and closed when collected.

    `url` is a redis:// or rediss:// URL (user, password, database number and query options
    such as `?socket_timeout=2` as redis-py reads them; the query wins over the arguments).
    """

    def __init__(
        self,
        url: str,
        scripts: Iterable[Script] = (),
        *,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.scripts = list(scripts)
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    async def start(self) -> None:
        """Connect and load the scripts; Unavailable (and not started) if Redis is not there."""
        self._started = True
        try:
            await _send(self.client(), [], load=self.scripts)
        except Unavailable:
            await self.close()
            raise

    async def close(self) -> None:
        """Disconnect; idempotent."""
        self._started = False
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            try:
                await client.aclose()
            except (RedisError, OSError):
                log.warning("closing the Redis connection failed", exc_info=True)

    def client(self) -> aioredis.Redis:
        """The client of the running event loop; Unavailable before `start`."""
        if not self._started:
            raise Unavailable("The Redis connection is not started.")
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A client's connections belong to the event loop that made them.
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.connect_timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._loop = loop
        return self._client

    async def run(self, calls: Sequence[Call]) -> list[Any]:
        """Run `calls` in one pipeline (one round trip): each one's result or exception.

        Calls of scripts Redis had lost are sent again after loading them: NOSCRIPT means
        the call did nothing. Raises Unavailable only when Redis could not be reached.
        """
        if not calls:
            return []
        client = self.client()
        results = await _send(client, calls)
        lost = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if lost:
            scripts = list({calls[i][0].name: calls[i][0] for i in lost}.values())
            again = await _send(client, [calls[i] for i in lost], load=scripts)
            for i, result in zip(lost, again[len(scripts) :]):
                results[i] = result
        return results

    async def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script; its result, or Unavailable."""
        (result,) = await self.run([(script, keys, args)])
        return ok(result)

    async def do(self, command: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run plain commands with the client; Redis's failures become Unavailable."""
        try:
            return await command(self.client())
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis could not be reached: {exc}") from exc


def ok(result: Any) -> Any:
    """A script's result from `RedisLink.run`, or Unavailable if the script failed."""
    if isinstance(result, Exception):
        raise Unavailable(f"Redis refused a script: {result}")
    return result


def number(x: float | None) -> str:
    """A number as a script reads it back exactly with tonumber ('' for None)."""
    return "" if x is None else repr(x)


async def _send(
    client: aioredis.Redis, calls: Sequence[Call], load: Sequence[Script] = ()
) -> list[Any]:
    """One pipeline: SCRIPT LOAD each of `load`, then the calls; the calls' results follow
    the loads' in the list."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            for script in load:
                pipe.script_load(script.source)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
    except (RedisError, OSError) as exc:
        raise Unavailable(f"Redis could not be reached: {exc}") from exc
    refused = [r for r in results[: len(load)] if isinstance(r, Exception)]
    if refused:
        raise Unavailable(f"Redis refused a script: {refused[0]}")
    return results
