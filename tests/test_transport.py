"""The forwarder's transport (httpx over aiohttp) against a real upstream process on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from relay import __version__
from relay.delivery.transport import AiohttpTransport, forwarding_client
from relay.delivery.upstream import Upstream, Verdict
from tests.support import UpstreamProcess, free_port

T = TypeVar("T")
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("transport")) as up:
        yield up


@pytest.fixture(autouse=True)
def fresh(upstream: UpstreamProcess) -> None:
    httpx.post(f"{upstream.url}/_reset", timeout=5).raise_for_status()


def with_client(work: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with forwarding_client() as client:
            return await work(client)

    return asyncio.run(main())


def test_the_body_and_headers_are_sent_and_the_answer_read(upstream: UpstreamProcess) -> None:
    upstream.control(script=[{"status": 422, "message": "amount must be a number"}])

    async def work(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(upstream.track_url, content=b'{"event_name":"purchase"}',
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer tok"}, timeout=5)

    r = with_client(work)
    assert r.status_code == 422
    assert r.json() == {"message": "amount must be a number"}
    assert r.headers["content-type"] == "application/json"
    (record,) = upstream.received()
    assert record["body"] == '{"event_name":"purchase"}'
    assert record["authorization"] == "Bearer tok"
    assert record["content_type"] == "application/json"
    assert record["user_agent"] == f"comet-relay/{__version__}"


def test_upstream_answers_are_classified_through_the_transport(upstream: UpstreamProcess) -> None:
    upstream.control(script=[{"status": 202}, {"status": 429, "retry_after": "7"},
                             {"status": 401}, {"status": 503}, {"status": 422}])

    async def work(client: httpx.AsyncClient) -> list[tuple[Verdict, float | None]]:
        up = Upstream(client, timeout=5)
        outcomes = [await up.send(upstream.track_url, "tok", b"{}", NOW) for _ in range(5)]
        return [(o.verdict, o.delay) for o in outcomes]

    assert with_client(work) == [
        (Verdict.DELIVERED, None), (Verdict.SLOW_DOWN, 7.0), (Verdict.PAUSE, None),
        (Verdict.RETRY, None), (Verdict.FATAL, None),
    ]


def test_upstream_sends_the_clients_headers_the_token_and_the_body(
    upstream: UpstreamProcess,
) -> None:
    async def work(client: httpx.AsyncClient) -> None:
        up = Upstream(client, timeout=5)
        for body in (b'{"n":1}', b'{"n":2}'):  # the second reuses the first one's headers
            assert (await up.send(upstream.track_url, "tok", body, NOW)).verdict is Verdict.DELIVERED
        assert (await up.send(upstream.track_url, None, b"{}", NOW)).verdict is Verdict.DELIVERED

    with_client(work)
    first, second, anonymous = upstream.received()
    assert [first["body"], second["body"], anonymous["body"]] == ['{"n":1}', '{"n":2}', "{}"]
    for record in (first, second, anonymous):
        assert record["user_agent"] == f"comet-relay/{__version__}"
        assert record["content_type"] == "application/json"
    assert first["authorization"] == second["authorization"] == "Bearer tok"
    assert anonymous["authorization"] is None


def test_one_connection_serves_requests_one_after_another(upstream: UpstreamProcess) -> None:
    async def work(client: httpx.AsyncClient) -> None:
        for _ in range(5):
            r = await client.post(upstream.track_url, content=b"{}", timeout=5)
            assert r.status_code == 202

    with_client(work)
    ports = {record["peer_port"] for record in upstream.received()}
    assert len(ports) == 1


def test_no_answer_in_time_is_a_read_timeout_and_a_retry(upstream: UpstreamProcess) -> None:
    upstream.control(script=[{"delay": 5.0}, {"delay": 5.0}])

    async def work(client: httpx.AsyncClient) -> tuple[Verdict, str]:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(upstream.track_url, content=b"{}", timeout=0.2)
        outcome = await Upstream(client, timeout=0.2).send(upstream.track_url, None, b"{}", NOW)
        return outcome.verdict, outcome.message

    assert with_client(work) == (Verdict.RETRY, "no answer within 0.2 s")


def test_a_refused_connection_is_a_connect_error_and_a_retry() -> None:
    url = f"http://127.0.0.1:{free_port()}/track"  # nothing listens there

    async def work(client: httpx.AsyncClient) -> tuple[Verdict, str]:
        with pytest.raises(httpx.ConnectError):
            await client.post(url, content=b"{}", timeout=2)
        outcome = await Upstream(client, timeout=2).send(url, None, b"{}", NOW)
        return outcome.verdict, outcome.message

    verdict, message = with_client(work)
    assert verdict is Verdict.RETRY
    assert message.startswith("connection failed: ConnectError")


def test_a_dropped_answer_is_a_transport_error_and_a_retry(upstream: UpstreamProcess) -> None:
    upstream.control(script=[{"drop": True}, {"drop": True}])

    async def work(client: httpx.AsyncClient) -> Verdict:
        with pytest.raises(httpx.TransportError):
            await client.post(upstream.track_url, content=b"{}", timeout=5)
        outcome = await Upstream(client, timeout=5).send(upstream.track_url, None, b"{}", NOW)
        return outcome.verdict

    assert with_client(work) is Verdict.RETRY


def test_closing_the_client_closes_the_pool(upstream: UpstreamProcess, tmp_path: Path) -> None:
    async def main() -> None:
        client = forwarding_client()
        async with client:
            assert (await client.post(upstream.track_url, content=b"{}", timeout=5)).status_code == 202
        transport = client._transport  # what closing the client must close
        assert isinstance(transport, AiohttpTransport) and transport._session is None

    asyncio.run(main())


def test_upstream_posts_without_httpx_objects_on_the_forwarders_transport(
    upstream: UpstreamProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`AiohttpTransport.post` carries the event: neither an httpx request nor an httpx
    response is made (they cost about as much as the HTTP itself), and the event, its
    headers and the answer's verdict are as through httpx."""
    upstream.control(script=[{"status": 429, "retry_after": "9"}])

    def no_httpx(*args: object, **kwargs: object) -> None:
        raise AssertionError("an httpx object was made for an event")

    async def work(client: httpx.AsyncClient) -> list[tuple[Verdict, float | None]]:
        up = Upstream(client, timeout=5)
        with monkeypatch.context() as patched:
            patched.setattr(httpx.Request, "__init__", no_httpx)
            patched.setattr(httpx.Response, "__init__", no_httpx)
            outcomes = [await up.send(upstream.track_url, "tok", b'{"n":1}', NOW) for _ in range(2)]
        return [(o.verdict, o.delay) for o in outcomes]

    assert with_client(work) == [(Verdict.SLOW_DOWN, 9.0), (Verdict.DELIVERED, None)]
    first, _ = upstream.received()
    assert (first["body"], first["authorization"]) == ('{"n":1}', "Bearer tok")
    assert (first["user_agent"], first["content_type"]) == (f"comet-relay/{__version__}", "application/json")


def test_a_compressed_answer_is_read_as_the_upstreams_words(upstream: UpstreamProcess) -> None:
    upstream.control(script=[{"status": 422, "message": "amount must be a number", "gzip": True}])

    async def work(client: httpx.AsyncClient) -> tuple[Verdict, str]:
        outcome = await Upstream(client, timeout=5).send(upstream.track_url, "tok", b"{}", NOW)
        return outcome.verdict, outcome.message

    assert with_client(work) == (Verdict.FATAL, "amount must be a number")


def test_other_transports_still_get_an_httpx_request(upstream: UpstreamProcess) -> None:
    """httpx's own pool (or a test's transport) is sent an `httpx.Request`, as before."""

    async def main() -> tuple[Verdict, str | None]:
        async with httpx.AsyncClient(headers={"User-Agent": "other"}) as client:
            outcome = await Upstream(client, timeout=5).send(upstream.track_url, "tok", b"{}", NOW)
        return outcome.verdict, upstream.received()[0]["user_agent"]  # type: ignore[return-value]

    assert asyncio.run(main()) == (Verdict.DELIVERED, "other")
