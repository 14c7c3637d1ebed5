"""`comet-relay outbox migrate --to redis://...`: a SQLite outbox moved, then served from Redis.

The end-to-end test fills a SQLite outbox as a relay would have left it (queued, retrying,
dead and delivered events, live dedup keys), migrates it with the command, points the same
relay.toml at the Redis and starts a real relay process there, with a fake upstream process:
what was queued is delivered once, what was dead is listed by `outbox dead`, and a duplicate
of a migrated event is answered as a replay.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from relay.cli import main
from relay.rules import new_event
from relay.settings import load
from relay.store.base import NewEvent, Outbox
from relay.store.sqlite import SQLiteOutbox
from tests import test_forwarder
from tests.support import RelayProcess, UpstreamProcess, free_port, wait_for, write_config
from tests.test_forward_process import status_counts
from tests.test_forwarder import KEY, PATH, TOKEN_ENV, delivered_keys, relay_for
from tests.test_outbox import run_with

upstream = test_forwarder.upstream  # the fixture: a fake upstream process for each test
QUEUED = [f"wait-{i}" for i in range(6)]
DEAD = ["bad-0", "bad-1"]


def cli(*args: str) -> Result:
    """`comet-relay ARGS` in this process, without the upstream token: migrate needs none."""
    return CliRunner().invoke(main, list(args), env={"ACME_TOKEN": ""})


def use_database(config: Path, database: str) -> None:
    """Point relay.toml's [relay] database at `database`."""
    text = config.read_text()
    old = next(line for line in text.splitlines() if line.startswith("database = "))
    config.write_text(text.replace(old, f'database = "{database}"'))


def fill(config: Path) -> list[NewEvent]:
    """The config's SQLite outbox as a relay leaves it: queued (one of them retrying, one a
    page view), dead and delivered events, every dedup key live, no lease (claimed once the
    Space's twin window had passed). Returns the events.
    """
    settings = load(str(config), TOKEN_ENV)
    space = settings.spaces["acme"]
    now = time.time()
    bodies: list[dict[str, object]] = [{"event_name": "purchase", "email": "a@b.co", "order_id": "o-1",
               "idempotency_key": "sent"}]  # fmt: skip
    bodies += [{"event_name": "purchase", "email": "a@b.co", "idempotency_key": k}
               for k in [*QUEUED[:-1], *DEAD]]  # fmt: skip
    bodies.append({"event_name": "view_content", "url": "https://x.example/",
                   "idempotency_key": QUEUED[-1]})  # fmt: skip
    events = [new_event(space, body, now) for body in bodies]

    async def scenario(box: Outbox) -> None:
        await box.enqueue(events, now)
        after_hold = now + space.twin_window_seconds
        claimed = {c.idempotency_key: c for c in await box.claim("acme", 100, 30, after_hold)}
        await box.delivered([claimed.pop("sent").id], now)
        for key in DEAD:
            await box.dead(claimed.pop(key).id, 422, f"upstream refused {key}", now)
        await box.retry(claimed.pop(QUEUED[0]).id, now + 1, 503, "busy", now)
        await box.release([c.id for c in claimed.values()])

    run_with(SQLiteOutbox(settings.database), scenario)
    return events


def test_migrated_outbox_is_served_from_redis_by_a_relay(
    tmp_path: Path, upstream: UpstreamProcess, redis_url: str
) -> None:
    config = relay_for(tmp_path, upstream, extra="twin_window_seconds = 0\n")  # sent at once
    events = fill(config)

    result = cli("outbox", "migrate", "--to", redis_url, "--config", str(config))

    assert result.exit_code == 0, result.output
    report = dict(re.findall(r"^  (\w+)\D+(\d+)", result.stdout, re.MULTILINE))
    assert report == {
        "queued": str(len(QUEUED)),
        "dead": str(len(DEAD)),
        "dedup": str(sum(len(e.dedup_keys) for e in events)),  # the delivered one's too
        "skipped": "0",
    }
    assert 'set database = "redis://..."' in result.stdout
    assert redis_url not in result.output and redis_url.split("//")[1] not in result.output
    assert status_counts(tmp_path / "relay.db") == {"delivered": 1}  # it stays behind

    use_database(config, redis_url)
    with RelayProcess(config, env=TOKEN_ENV) as relay:
        wait_for(lambda: set(delivered_keys(upstream)) == set(QUEUED), 20, "the queue delivered")
        wait_for(lambda: httpx.get(f"{relay.url}/healthz").json()["queued"] == 0, 10, "settled")

        dead = cli("outbox", "dead", "--json", "--config", str(config))
        with httpx.Client(base_url=relay.url, headers=KEY, timeout=10) as client:

            def send(**fields: str) -> httpx.Response:
                return client.post(PATH, json={"event_name": "purchase", "email": "a@b.co",
                                               **fields})  # fmt: skip

            again = [send(idempotency_key=key) for key in ("sent", QUEUED[1], DEAD[0])]
            same_order = send(order_id="o-1")
            fresh = send(idempotency_key="new")
            assert fresh.status_code == 202, fresh.text
        wait_for(lambda: "new" in delivered_keys(upstream), 10, "the fresh event delivered")
        wait_for(lambda: httpx.get(f"{relay.url}/healthz").json()["queued"] == 0, 10, "settled")

    assert delivered_keys(upstream) == Counter({k: 1 for k in [*QUEUED, "new"]})
    assert dead.exit_code == 0, dead.output
    assert [(d["idempotency_key"], d["last_status"], d["last_message"])
            for d in json.loads(dead.stdout)] == [
        (k, 422, f"upstream refused {k}") for k in DEAD
    ]  # fmt: skip
    for answer in [*again, same_order]:
        assert answer.status_code == 202 and answer.headers["Idempotent-Replayed"] == "true"
    assert fresh.status_code == 202 and "Idempotent-Replayed" not in fresh.headers


def test_migrate_refuses_an_outbox_that_is_in_redis_already(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    use_database(config, "redis://127.0.0.1:1/0")
    result = cli("outbox", "migrate", "--to", "redis://127.0.0.1:2/0", "--config", str(config))
    assert result.exit_code == 1
    assert "the outbox is in Redis already" in result.stderr


def test_migrate_names_a_missing_outbox_and_a_running_relay(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    to = ["--to", "redis://127.0.0.1:1/0", "--config", str(config)]
    missing = cli("outbox", "migrate", *to)
    fill(config)

    async def lease(box: Outbox) -> None:
        now = time.time()
        space = load(str(config), {}).spaces["acme"]
        await box.enqueue([new_event(space, {"event_name": "purchase"}, now)], now)
        assert await box.claim("acme", 1, 60, now + space.twin_window_seconds)  # after its hold

    run_with(SQLiteOutbox(str(tmp_path / "relay.db")), lease)
    running = cli("outbox", "migrate", *to)

    assert missing.exit_code == 1 and "no such SQLite outbox" in missing.stderr
    assert running.exit_code == 1 and "leased to a running forwarder" in running.stderr
    assert "Traceback" not in missing.output + running.output


def test_migrate_without_redis_says_to_run_it_again_and_never_shows_the_password(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    fill(config)
    url = f"redis://:pa55word-xyz@127.0.0.1:{free_port()}/0"  # nothing listens there
    result = cli("outbox", "migrate", "--to", url, "--config", str(config))
    assert result.exit_code == 1
    assert "Redis could not be reached or failed; run it again, it resumes" in result.stderr
    assert "pa55word-xyz" not in result.output
    assert status_counts(tmp_path / "relay.db") == {"queued": 6, "dead": 2, "delivered": 1}


@pytest.mark.parametrize("to", ["http://127.0.0.1:1/", "relay.db", "redis:/x:pass@h"])
def test_migrate_wants_a_redis_url_and_does_not_repeat_it(tmp_path: Path, to: str) -> None:
    config = write_config(tmp_path)
    result = cli("outbox", "migrate", "--to", to, "--config", str(config))
    assert result.exit_code == 2
    assert "must be a redis:// or rediss:// URL" in result.stderr
    assert to not in result.output
