"""The Redis outbox beyond the shared contract: several relays, dead consumers, failures, crashes.

The contract itself (dedup, claim order, leases, retries, dead letters, stats...) runs on both
backends in tests/test_outbox.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import relay.redis_link
from relay.errors import Unavailable
from relay.store.base import QUEUED, Enqueued
from relay.store.redis import SEQ_BITS, RedisOutbox, split_id
from tests.redis_server import RedisServer
from tests.test_outbox import HOUR, ROOT, T0, claim_keys, event, page_view, queued, run_with

T = TypeVar("T")


def run(url: str, scenario: Callable[[RedisOutbox], Awaitable[T]], **options: Any) -> T:
    return run_with(RedisOutbox(url, **options), scenario)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may kill and restart."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


def child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env
    )


# several relays on one Redis


def test_two_relays_enqueueing_the_same_keys_at_once_queue_each_once(redis_url: str) -> None:
    async def scenario(first: RedisOutbox) -> list[list[Enqueued]]:
        second = RedisOutbox(redis_url)
        await second.start()
        try:
            return await asyncio.gather(
                *(box.enqueue([event(f"k{i % 50}")], T0) for i in range(200)
                  for box in (first, second))
            )  # fmt: skip
        finally:
            await second.close()

    results = run(redis_url, scenario)
    assert sum(result.queued for (result,) in results) == 50
    assert sorted(run(redis_url, claim_keys)) == sorted(f"k{i}" for i in range(50))


RACER = """
import asyncio, sys
from relay.store.redis import RedisOutbox
from relay.store.base import NewEvent

async def main(url: str, start_at: float) -> None:
    box = RedisOutbox(url)
    await box.start()
    events = [NewEvent("acme", "purchase", f"k{i}", b"{}", (f"idem:k{i}",), 1e12, 0.0)
              for i in range(2000)]
    await asyncio.sleep(max(0.0, start_at - __import__("time").time()))
    answers = await asyncio.gather(*(box.enqueue([e], 0.0) for e in events))
    print(sum(result.queued for (result,) in answers), flush=True)
    await box.close()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def test_two_relay_processes_racing_on_2000_keys_queue_each_once(redis_url: str) -> None:
    start_at = str(time.time() + 1.5)  # both start enqueueing at the same moment
    racers = [child(RACER, redis_url, start_at) for _ in range(2)]
    queued = []
    for racer in racers:
        out, _ = racer.communicate(timeout=60)
        assert racer.returncode == 0
        queued.append(int(out))
    assert sum(queued) == 2000
    assert len(run(redis_url, lambda box: box.claim("acme", 5000, 30, 0.0))) == 2000


CLAIMER = """
import asyncio, sys
from relay.store.redis import RedisOutbox

async def main(url: str) -> None:
    box = RedisOutbox(url)
    await box.start()
    claimed = await box.claim("acme", 10, 30, float(sys.argv[2]))
    print(len(claimed), flush=True)
    await asyncio.sleep(60)  # "sending": SIGKILLed meanwhile, the leases are never given back

asyncio.run(main(sys.argv[1]))
"""


def test_a_dead_consumers_claims_are_claimed_again_after_the_lease(redis_url: str) -> None:
    run(redis_url, lambda box: box.enqueue([event("a"), event("b"), page_view("c")], T0))
    consumer = child(CLAIMER, redis_url, str(T0))
    try:
        assert consumer.stdout is not None
        assert consumer.stdout.readline().strip() == "3"
    finally:
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(10)
        assert consumer.stdout is not None
        consumer.stdout.close()

    async def scenario(box: RedisOutbox) -> None:
        assert await box.claim("acme", 10, 30, T0 + 29) == []
        assert await box.next_due("acme") == T0 + 30
        again = await box.claim("acme", 10, 30, T0 + 30)
        assert [(c.idempotency_key, c.attempts) for c in again] == [("a", 0), ("b", 0), ("c", 0)]

    run(redis_url, scenario)


# ids and keys


def test_ids_name_their_space_and_keys_share_a_hash_tag(redis_url: str) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([event("a"), event("b", space="beta")], T0)
        (a,) = await box.claim("acme", 10, 30, T0)
        (b,) = await box.claim("beta", 10, 30, T0)
        assert split_id(a.id) == (1, 1) and split_id(b.id) == (2, 1)
        assert a.id == 1 << SEQ_BITS | 1
        await box.retry(b.id + (1 << SEQ_BITS) * 40, T0, 500, "", T0)  # no such Space
        await box.dead(a.id, 422, "bad", T0)
        assert await box.replay([b.id], T0) == 0  # b is not dead
        assert [d.id for d in await box.dead_letters()] == [a.id]
        keys = await box.link.do(lambda r: r.keys("*"))
        tags = {k.split(b"}")[0] + b"}" for k in keys if isinstance(k, bytes) and b"{" in k}
        assert tags == {b"comet:{acme}", b"comet:{beta}"}

    run(redis_url, scenario)


def test_one_outbox_serves_successive_event_loops(redis_url: str) -> None:
    box = RedisOutbox(redis_url)  # as the CLI uses it: asyncio.run per step
    asyncio.run(box.start())
    assert queued(asyncio.run(box.enqueue([event("a")], T0))) == [True]
    assert asyncio.run(box.stats()).queued == 1
    asyncio.run(box.close())
    with pytest.raises(Unavailable):
        asyncio.run(box.stats())


# round trips


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every pipeline RedisLink sends from now on appends its number of commands."""
    sent: list[int] = []
    real = relay.redis_link._send

    async def counting(client: Any, calls: Any, load: Any = ()) -> list[Any]:
        sent.append(len(calls) + len(load))
        return await real(client, calls, load)

    monkeypatch.setattr(relay.redis_link, "_send", counting)
    return sent


def test_a_tick_of_enqueues_is_one_round_trip_and_a_claim_one_script(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([event("warm"), event("warm", space="beta")], T0)  # registers both
        sent = count_round_trips(monkeypatch)
        answers = await asyncio.gather(
            *(box.enqueue([event(f"e{i}", space=("acme", "beta")[i % 2])], T0) for i in range(300))
        )
        assert answers == [[QUEUED]] * 300
        assert sent == [2]  # one pipeline: one enqueue script per Space
        sent.clear()
        assert len(await box.claim("acme", 150, 30, T0)) == 150
        assert sent == [1]

    run(redis_url, scenario)


def test_lost_scripts_are_loaded_again(redis_url: str, redis_server: RedisServer) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([event("a")], T0)
        redis_server.command("SCRIPT", "FLUSH")
        assert queued(await box.enqueue([event("b"), event("a")], T0)) == [True, False]
        assert await claim_keys(box) == ["a", "b"]

    run(redis_url, scenario)


# failures


def test_a_failing_script_is_unavailable_and_spares_other_spaces(
    redis_url: str, redis_server: RedisServer
) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([event("warm"), event("warm", space="beta")], T0)
        redis_server.command("SET", "comet:{acme}:ready:0", "not a sorted set")
        broken, fine = await asyncio.gather(
            box.enqueue([event("a")], T0),
            box.enqueue([event("b", space="beta")], T0),
            return_exceptions=True,
        )
        assert isinstance(broken, Unavailable) and "WRONGTYPE" in broken.message
        assert fine == [QUEUED]
        with pytest.raises(Unavailable):
            await box.claim("acme", 10, 30, T0)
        assert await claim_keys(box, space="beta") == ["warm", "b"]

    run(redis_url, scenario)


def test_nothing_listening_is_unavailable_at_once() -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    url = f"redis://127.0.0.1:{port.getsockname()[1]}/0"

    async def scenario() -> None:
        box = RedisOutbox(url)
        with pytest.raises(Unavailable):
            await box.start()
        with pytest.raises(Unavailable):
            await box.enqueue([event("a")], T0)

    try:
        started = time.monotonic()
        asyncio.run(scenario())
        assert time.monotonic() - started < 2
    finally:
        port.close()


def test_a_redis_that_never_answers_is_unavailable_after_the_socket_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (in the backlog), never answers a command
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0?socket_timeout=0.3"

    async def scenario() -> None:
        box = RedisOutbox(url)
        with pytest.raises(Unavailable):
            await box.start()

    try:
        started = time.monotonic()
        asyncio.run(asyncio.wait_for(scenario(), 10))
        assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_redis_going_away_is_unavailable_and_coming_back_is_used_again(
    own_server: RedisServer,
) -> None:
    async def scenario(box: RedisOutbox) -> None:
        assert queued(await box.enqueue([event("a")], T0)) == [True]
        own_server.kill()
        with pytest.raises(Unavailable):
            await box.enqueue([event("b")], T0)
        with pytest.raises(Unavailable):
            await box.claim("acme", 10, 30, T0)
        own_server.start()  # same directory: the append-only file brings "a" back
        assert queued(await box.enqueue([event("b"), event("a")], T0)) == [True, False]
        assert await claim_keys(box) == ["a", "b"]

    run(own_server.url, scenario, socket_timeout=2.0)


PRODUCER = """
import asyncio, sys
from relay.store.redis import RedisOutbox
from relay.store.base import NewEvent

async def main(url: str) -> None:
    box = RedisOutbox(url, socket_timeout=2.0)
    await box.start()

    async def one(i: int) -> None:
        key = f"k{i}"
        ev = NewEvent("acme", "purchase", key, b"{}", ("idem:" + key,), 1e12, 0.0)
        try:
            if (await box.enqueue([ev], 0.0))[0].queued:
                print(key, flush=True)
        except Exception:
            pass  # not acknowledged: the sender would retry

    for start in range(0, 200_000, 16):
        await asyncio.gather(*(one(i) for i in range(start, start + 16)))

asyncio.run(main(sys.argv[1]))
"""


def test_redis_sigkill_with_appendfsync_always_loses_no_acknowledged_event(
    own_server: RedisServer,
) -> None:
    producer = child(PRODUCER, own_server.url)
    acked: list[str] = []
    try:
        assert producer.stdout is not None
        deadline = time.monotonic() + 60
        while len(acked) < 1000 and time.monotonic() < deadline:
            acked.append(producer.stdout.readline().strip())
        own_server.kill()  # Redis crashes mid-stream; the relay keeps trying
        time.sleep(0.5)
    finally:
        producer.kill()
        producer.wait(10)
        assert producer.stdout is not None
        acked.extend(line.strip() for line in producer.stdout)
        producer.stdout.close()
    acked = [key for key in acked if key]
    assert len(acked) >= 1000
    own_server.start()

    async def stored(box: RedisOutbox) -> set[str]:
        return {c.idempotency_key for c in await box.claim("acme", 1_000_000, 30, 0.0)}

    missing = set(acked) - run(own_server.url, stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"


def test_prune_and_stats_cover_every_registered_space(redis_url: str) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([event(f"a{i}", until=T0 + 10) for i in range(5)], T0)
        await box.enqueue([event(f"b{i}", space="beta", until=T0 + 10) for i in range(5)], T0)
        for space in ("acme", "beta"):
            claimed = await box.claim(space, 10, 30, T0)
            await box.delivered([c.id for c in claimed], T0 + 1)
        other = RedisOutbox(redis_url)  # another relay, which never saw these Spaces
        await other.start()
        try:
            assert (await other.stats()).delivered == 10
            assert await other.prune(delivered_before=T0 + 2, now=T0 + 48 * HOUR) == 10
        finally:
            await other.close()
        assert (await box.stats()).as_dict()["spaces"] == {}
        assert await box.link.do(lambda r: r.zcard("comet:{acme}:dedup")) == 0

    run(redis_url, scenario)


def test_delivered_events_are_kept_a_minute_then_counted_per_second(redis_url: str) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([event(f"e{i}") for i in range(400)], T0)
        claimed = await box.claim("acme", 400, 30, T0)
        await box.delivered([c.id for c in claimed[:100]], T0 + 10.2)
        await box.delivered([c.id for c in claimed[100:200]], T0 + 10.9)
        assert await box.prune(delivered_before=T0 + 10.5, now=T0 + 20) == 100  # exact
        await box.delivered([c.id for c in claimed[200:]], T0 + 100)  # moves older ones on
        assert await box.link.do(lambda r: r.hgetall("comet:{acme}:done:n")) == {
            str(int(T0 + 10)).encode(): b"100"
        }  # one small entry for the second, whatever the number of events
        assert await box.prune(delivered_before=T0 + 10.95, now=T0 + 100) == 0  # straddles
        assert (await box.stats()).delivered == 300
        assert await box.prune(delivered_before=T0 + 11, now=T0 + 100) == 100
        assert (await box.stats()).delivered == 200

    run(redis_url, scenario)


def test_a_redis_without_its_append_only_file_is_used_with_a_warning(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    assert own_server.command("CONFIG", "SET", "appendonly", "no") == b"+OK\r\n"
    assert queued(run(own_server.url, lambda box: box.enqueue([event("a")], T0))) == [True]
    assert "appendonly yes" in caplog.text
