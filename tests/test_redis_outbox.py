"""The Redis outbox beyond the shared contract: several relays, dead consumers, failures, crashes.

The contract itself (dedup, claim order, leases, retries, dead letters, stats...) runs on both
backends in tests/test_outbox.py.
"""

from __future__ import annotations

import asyncio
import json
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
import redis

import relay.redis_link
from relay.errors import Unavailable
from relay.store.base import QUEUED, Claimed, Enqueued, Outcome
from relay.store.redis import SEQ_BITS, RedisOutbox, split_id
from tests.redis_server import RedisServer
from tests.support import wait_for
from tests.test_outbox import HOUR, ROOT, T0, claim_keys, event, page_view, queued, run_with
from tests.test_outbox_twins import API, BROWSER, ev

T = TypeVar("T")


def run(url: str, scenario: Callable[[RedisOutbox], Awaitable[T]], **options: Any) -> T:
    return run_with(RedisOutbox(url, **options), scenario)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may kill and restart."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


def child(code: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=stdin, stdout=subprocess.PIPE, text=True, env=env,
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

async def main(url: str) -> None:
    box = RedisOutbox(url)
    await box.start()
    await box._number("acme")  # registered before the race: a write of its own
    events = [NewEvent("acme", "purchase", f"k{i}", b"{}", (f"idem:k{i}",), 1e12, 0.0)
              for i in range(2000)]
    print("ready", flush=True)
    sys.stdin.readline()  # the barrier: go when the test says so
    answers = await asyncio.gather(*(box.enqueue([e], 0.0) for e in events))
    print(sum(result.queued for (result,) in answers), flush=True)
    await box.close()

asyncio.run(main(sys.argv[1]))
"""


def test_two_relay_processes_racing_on_2000_keys_queue_each_once(redis_url: str) -> None:
    racers = [child(RACER, redis_url, stdin=subprocess.PIPE) for _ in range(2)]
    try:
        for racer in racers:  # both connected, registered and ready, however long it took
            assert racer.stdout is not None and racer.stdout.readline() == "ready\n"
        # The race certainly happens: writes are paused, both racers are let go, and once
        # the enqueue scripts of both wait in Redis (blocked) writes resume; Redis runs
        # them one after the other, each as one atomic script.
        admin = redis.Redis.from_url(redis_url)
        admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        try:
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write("go\n")
                racer.stdin.flush()
            wait_for(lambda: admin.info("clients")["blocked_clients"] >= 2, 50,
                     "both racers' scripts waiting in Redis")
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        queued = []
        for racer in racers:
            out, _ = racer.communicate(timeout=60)
            assert racer.returncode == 0
            queued.append(int(out))
    finally:
        for racer in racers:
            racer.kill()
            racer.wait(10)
    assert sum(queued) == 2000
    assert len(run(redis_url, lambda box: box.claim("acme", 5000, 30, 0.0))) == 2000


async def together(
    url: str, first: RedisOutbox, *calls: Callable[[RedisOutbox], Awaitable[Any]]
) -> list[Any]:
    """Run each call from its own relay's outbox (`first` for the first) so that their scripts
    certainly meet in Redis: writes are paused, each call is sent once the one before waits in
    Redis (blocked), and when all wait they are let go at once; Redis runs them one after the
    other, in the order they came. Their answers, in the order of `calls`."""
    boxes = [first, *(RedisOutbox(url) for _ in calls[1:])]
    for box in boxes[1:]:
        await box.start()

    async def waiting(n: int) -> None:
        deadline = time.monotonic() + 5
        while (await first.link.do(lambda r: r.info("clients")))["blocked_clients"] < n:
            assert time.monotonic() < deadline, "the script never reached Redis"
            await asyncio.sleep(0.005)

    try:
        for box in boxes:
            await box._number("acme")  # registered before the pause: a script too
        await first.link.do(lambda r: r.execute_command("CLIENT", "PAUSE", 10_000, "WRITE"))
        tasks = []
        try:
            for box, call in zip(boxes, calls):
                tasks.append(asyncio.ensure_future(call(box)))
                await waiting(len(tasks))
        finally:
            await first.link.do(lambda r: r.execute_command("CLIENT", "UNPAUSE"))
        return list(await asyncio.gather(*tasks))
    finally:
        for box in boxes[1:]:
            await box.close()


def test_two_relays_meeting_one_browser_event_with_api_twins_merge_it_once(
    redis_url: str,
) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([ev("pixel", BROWSER, order="9", held=True, comet_token="t")], T0)
        answers = await together(
            redis_url, box,
            lambda relay: relay.enqueue([ev("server-1", API, order="9", amount=1)], T0 + 1),
            lambda relay: relay.enqueue([ev("pixel", API, amount=2)], T0 + 1),
        )  # fmt: skip
        # the first took the browser event over by its order; the second, sent with the
        # browser's own key, finds that key naming an API event now: its duplicate
        assert answers == [[Enqueued(Outcome.MERGED, "pixel")],
                           [Enqueued(Outcome.DUPLICATE, "server-1")]]  # fmt: skip
        (one,) = await box.claim("acme", 10, 30, T0 + 1)  # one event: the winner's, with a twin
        assert (one.source, one.idempotency_key) == (API, "server-1")
        assert one.twin is not None and json.loads(one.body())["comet_token"] == "t"
        assert (await box.stats()).queued == 1

    run(redis_url, scenario)


def test_two_relays_meeting_one_api_event_with_browser_twins_merge_one(redis_url: str) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([ev("K", API, held=True, amount=5)], T0)
        answers = await together(
            redis_url, box,
            lambda relay: relay.enqueue([ev("K", BROWSER, comet_token="first")], T0 + 1),
            lambda relay: relay.enqueue([ev("K", BROWSER, comet_token="second")], T0 + 1),
        )  # fmt: skip
        assert answers == [[Enqueued(Outcome.MERGED, "K")], [Enqueued(Outcome.DUPLICATE, "K")]]
        (one,) = await box.claim("acme", 10, 30, T0 + 1)
        assert json.loads(one.body())["comet_token"] == "first"

    run(redis_url, scenario)


@pytest.mark.parametrize("claim_first", [True, False], ids=["claim-first", "twin-first"])
def test_a_claim_and_a_twin_racing_either_lease_the_event_or_merge_into_it(
    redis_url: str, claim_first: bool
) -> None:
    async def scenario(box: RedisOutbox) -> tuple[list[Claimed], Enqueued]:
        await box.enqueue([ev("pixel", BROWSER, comet_token="t")], T0)  # due at once
        calls: list[Callable[[RedisOutbox], Awaitable[Any]]] = [
            lambda relay: relay.claim("acme", 10, 30, T0 + 1),
            lambda relay: relay.enqueue([ev("pixel", API, amount=9)], T0 + 1),
        ]
        answers = await together(redis_url, box, *(calls if claim_first else calls[::-1]))
        claimed, (answer,) = answers if claim_first else answers[::-1]
        return claimed + await box.claim("acme", 10, 30, T0 + 1), answer

    claimed, answer = run(redis_url, scenario)
    if claim_first:  # the leased browser event takes no twin: the API event is queued apart
        assert answer == Enqueued(Outcome.QUEUED, "pixel")
        assert [(c.source, c.twin) for c in claimed] == [(BROWSER, None), (API, None)]
    else:  # the twin merged first: the claim took the one event, with its twin
        assert answer == Enqueued(Outcome.MERGED, "pixel")
        assert [(c.source, c.twin is not None) for c in claimed] == [(API, True)]


def test_held_events_wait_apart_so_a_claim_never_steps_over_them(redis_url: str) -> None:
    async def scenario(box: RedisOutbox) -> None:
        await box.enqueue([ev(f"held-{i}", API, held=True) for i in range(50)], T0)
        await box.enqueue([ev("now", API)], T0)
        assert await box.link.do(lambda r: r.zrange("comet:{acme}:ready:0", 0, -1)) == [b"51"]
        assert await box.link.do(lambda r: r.zcard("comet:{acme}:wait")) == 50
        assert await claim_keys(box, now=T0 + 1) == ["now"]

    run(redis_url, scenario)


# a Space written by a relay from before trust tiers (layout 1)

LAYOUT_1 = """
-- Space acme as the scripts of a relay from before trust tiers left it: six events accepted
-- at ARGV[1], then "sent" delivered, "retry" retried, "dead" dead, "leased" claimed by a
-- holder that died (and the key of an event "purchase:7" delivered earlier). Two priorities
-- (1: page views), events without a source, dedup keys in one zset naming no event, an
-- idempotency key's without the event name.
local P, t0 = 'comet:{acme}:', tonumber(ARGV[1])
local function event(seq, name, key, p, fields)
  local e = {n = name, k = key, p = p, r = t0, t = t0, a = 0, s = 'q',
             b = cjson.encode({event_name = name, idempotency_key = key})}
  for field, value in pairs(fields or {}) do e[field] = value end
  redis.call('HSET', P .. 'ev', seq, cmsgpack.pack(e))
end
event(1, 'purchase', 'conv', 0)
event(2, 'view_content', 'pv', 1)
event(3, 'purchase', 'retry', 0, {a = 1, t = t0 + 100, ls = 503, lm = 'busy'})
event(4, 'view_content', 'leased', 1)
event(5, 'purchase', 'dead', 0, {a = 1, s = 'd', ls = 422, lm = 'bad', x = t0 + 1})
redis.call('SET', P .. 'seq', 6)
redis.call('ZADD', P .. 'ready:0', 1, 1)
redis.call('ZADD', P .. 'ready:1', 2, 2)
redis.call('ZADD', P .. 'readyat', t0, 1, t0, 2)
redis.call('ZADD', P .. 'wait', t0 + 100, 3)
redis.call('ZADD', P .. 'leased', t0 + 30, 4)
redis.call('ZADD', P .. 'dead', 5, 5)
redis.call('ZADD', P .. 'done', t0 + 1, 6)
redis.call('ZADD', P .. 'queued:0', 1, 1, 3, 3)
redis.call('ZADD', P .. 'queued:1', 2, 2, 4, 4)
for _, k in ipairs({'idem:conv', 'idem:pv', 'idem:retry', 'idem:leased', 'idem:dead',
                    'idem:sent', 'order:purchase:1001', 'idem:purchase:7'}) do
  redis.call('ZADD', P .. 'dedup', t0 + 172800, k)
end
redis.call('HSET', P .. 'counts', 'queued', 4, 'retrying', 1, 'delivered', 1, 'dead', 1)
redis.call('HSET', 'comet:spaces', 's:acme', 1, 'n:1', 'acme', 'last', 1)
"""
OLD_KEYS_UNTIL = T0 + 48 * HOUR


def write_layout_1(server: RedisServer) -> None:
    assert server.command("EVAL", LAYOUT_1, "0", repr(T0)).startswith(b"$-1")  # nil: done


def test_a_space_of_layout_1_is_upgraded_at_its_first_touch_and_keeps_working(
    redis_url: str, redis_server: RedisServer
) -> None:
    write_layout_1(redis_server)
    now = T0 + 50

    async def scenario(box: RedisOutbox) -> None:
        # The first touch: two relays at once, a browser conversion first, then a claim.
        answers, claimed = await together(
            redis_url, box,
            lambda relay: relay.enqueue(
                [ev("new", BROWSER, at=now), ev("conv", API, at=now), ev("sent", BROWSER, at=now),
                 ev("o", API, order="1001", at=now), ev("pv", BROWSER, at=now),
                 ev("dead", API, at=now), ev("purchase:7", API, at=now), ev("7", API, at=now)],
                now),
            lambda relay: relay.claim("acme", 10, 30, now),
        )  # fmt: skip
        assert answers == [
            QUEUED, Enqueued(Outcome.DUPLICATE, "conv"),  # old keys: duplicates as before
            Enqueued(Outcome.DUPLICATE, "sent"),  # of an event delivered before the upgrade
            Enqueued(Outcome.DUPLICATE, "1001"),  # an old order key names no event
            Enqueued(Outcome.DUPLICATE, "pv"),  # an old "idem:KEY" of another event name
            Enqueued(Outcome.DUPLICATE, "dead"),
            Enqueued(Outcome.DUPLICATE, "purchase:7"),
            QUEUED,  # "idem:purchase:7" is the old key of "purchase:7", not purchase's "7"
        ]
        # API conversions, then the new browser one, then the old page views (priority 1 was
        # theirs), the one whose holder died among them
        assert [(c.idempotency_key, c.source, c.twin, c.attempts) for c in claimed] == [
            ("conv", API, None, 0), ("7", API, None, 0), ("new", BROWSER, None, 0),
            ("pv", API, None, 0), ("leased", API, None, 0),
        ]
        await box.delivered([c.id for c in claimed], now)
        figures = await box.queue_figures()
        assert (figures.depth, figures.oldest) == ({("acme", 0): 1}, {("acme", 0): T0})
        assert await box.next_due("acme") == T0 + 100  # "retry", waiting
        stats = await box.stats()
        assert (stats.queued, stats.retrying, stats.delivered, stats.dead) == (1, 1, 6, 1)

        (retry,) = await box.claim("acme", 10, 30, T0 + 100)
        assert (retry.idempotency_key, retry.attempts, retry.source) == ("retry", 1, API)
        (dead,) = await box.dead_letters()
        assert (dead.idempotency_key, dead.attempts, dead.last_status) == ("dead", 1, 422)
        assert await box.replay([dead.id], T0 + 100) == 1
        assert [c.idempotency_key for c in await box.claim("acme", 10, 30, T0 + 100)] == ["dead"]

        # the old keys lapse when they expire; new ones are per event name
        late = OLD_KEYS_UNTIL + 1
        assert await box.enqueue([ev("pv", BROWSER, at=late), ev("conv", API, at=late)], late) == [
            QUEUED, QUEUED,
        ]  # fmt: skip
        meta = await box.link.do(lambda r: r.hgetall("comet:{acme}:meta"))
        assert meta == {b"layout": b"2", b"legacy_until": str(int(OLD_KEYS_UNTIL)).encode()}

    run(redis_url, scenario)


def test_a_read_only_script_upgrades_too_and_an_upgrade_happens_once(
    redis_url: str, redis_server: RedisServer
) -> None:
    write_layout_1(redis_server)

    async def scenario(box: RedisOutbox) -> None:
        assert await box.next_due("acme") == T0  # the first touch
        ready = await box.link.do(lambda r: r.zrange("comet:{acme}:ready:2", 0, -1))
        assert ready == [b"2"]  # the old page view
        await box.enqueue([ev("b", BROWSER)], T0)  # into ready:1, which is a browser's now
        other = RedisOutbox(redis_url)  # another relay, later: nothing is upgraded again
        await other.start()
        try:
            claimed = await other.claim("acme", 10, 30, T0)
        finally:
            await other.close()
        assert [(c.idempotency_key, c.source) for c in claimed] == [
            ("conv", API), ("b", BROWSER), ("pv", API)
        ]

    run(redis_url, scenario)


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


def test_replies_are_parsed_by_hiredis(redis_url: str) -> None:
    """The claim's reply (eight fields an event, twenty events) parsed in Python was a tenth of
    a delivered event's CPU: the dependency `redis[hiredis]` must give the C parser."""

    async def scenario() -> str:
        link = relay.redis_link.RedisLink(redis_url)
        await link.start()
        try:
            client = link.client()
            await client.ping()
            connection = await client.connection_pool.get_connection()
            try:
                return type(connection._parser).__name__
            finally:
                await client.connection_pool.release(connection)
        finally:
            await link.close()

    assert asyncio.run(scenario()) == "_AsyncHiredisParser"
