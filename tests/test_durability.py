"""Accept means durable: a SIGKILL right after a burst of 202s loses none of them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx

from tests.support import RelayProcess, Space, write_config

PATH = "/public-api/v1/events/track"
HEADERS = {"Authorization": "Bearer key-acme-write"}


async def burst(relay: RelayProcess, total: int, kill_after: int) -> list[str]:
    """Send `total` events, 50 at a time; SIGKILL the relay once `kill_after` are acknowledged."""
    acked: list[str] = []
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=relay.url, limits=limits, timeout=10) as client:

        async def one(i: int) -> None:
            key = f"burst-{i}"
            event = {"event_name": "purchase", "email": f"u{i}@shop.test", "idempotency_key": key}
            r = await client.post(PATH, json=event, headers=HEADERS)
            if r.status_code == 202:
                acked.append(key)
                if len(acked) == kill_after:
                    relay.kill()

        await asyncio.gather(*(one(i) for i in range(total)), return_exceptions=True)
    return acked


def stored_keys(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT idempotency_key FROM outbox")}
    finally:
        conn.close()


def test_sigkill_after_a_burst_loses_no_acknowledged_event(tmp_path: Path) -> None:
    config = write_config(tmp_path, [Space(extra="rate_limit_per_minute = 100000")])
    relay = RelayProcess(config).start()
    try:
        acked = asyncio.run(burst(relay, total=1000, kill_after=300))
    finally:
        relay.kill()
    assert len(acked) >= 300
    assert relay.proc is not None and relay.proc.returncode == -9

    # A new process on the same file starts, and every acknowledged event is in its outbox.
    with RelayProcess(config) as again:
        queued = httpx.get(f"{again.url}/healthz").json()["queued"]
    missing = set(acked) - stored_keys(tmp_path / "relay.db")
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert queued >= len(acked)
