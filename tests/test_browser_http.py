"""The browser routes over real HTTP, against `comet-relay serve` in its own process.

Requests go through `httpx.post`/`httpx.get` (no cookie jar), so each test says which visitor
cookie it sends, if any.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from relay.auth.visitor import VisitorTokens
from tests.support import ROOT, SECRET, RelayProcess, Space, write_config
from tests.test_api_http import stored

ORIGIN = "https://acme.example"
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
TOKENS = VisitorTokens([SECRET])


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    directory = tmp_path_factory.mktemp("browser")
    config = write_config(
        directory,
        [
            Space("acme", extra='custom_events = ["custom_event_3"]'),
            Space("gone", keys={"key-gone": ["events:write"]}, extra="active = false"),
        ],
        relay_extra=(
            'max_body_bytes = 4096\nmax_batch_events = 5\nsnippet_aliases = ["/assets/app-7.js"]'
        ),
    )
    with RelayProcess(config) as proc:
        yield proc


def post(
    relay: RelayProcess,
    events: Sequence[object] | None = None,
    *,
    origin: str | None = ORIGIN,
    key: str = "pk_acme",
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"Content-Type": "text/plain;charset=UTF-8", "User-Agent": CHROME, **(headers or {})}
    if origin is not None:
        sent["Origin"] = origin
    body = content if content is not None else json.dumps({"e": list(events or [])}).encode()
    return httpx.post(f"{relay.url}/e?k={key}", content=body, headers=sent, timeout=10)


def visitor_cookie(response: httpx.Response) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie


def visitor_of(response: httpx.Response) -> str:
    visitor = TOKENS.verify(visitor_cookie(response)["_comet"].value)
    assert visitor is not None
    return visitor


def assert_cors(response: httpx.Response) -> None:
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers["vary"]


# --- Origin and site key: 403 before anything else -------------------------------------------


def test_unknown_or_missing_site_key_is_403(relay: RelayProcess) -> None:
    for key in ("pk_nope", ""):
        r = post(relay, [{"event_name": "contact"}], key=key)
        assert r.status_code == 403
        assert "site key" in r.json()["message"]
        assert "set-cookie" not in r.headers
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "origin",
    [None, "https://evil.example", "http://acme.example", "https://acme.example:8443", "null"],
)
def test_a_foreign_or_missing_origin_is_403_before_the_body_is_read(
    relay: RelayProcess, origin: str | None
) -> None:
    huge = b'{"e": [' + b" " * 20_000 + b"]}"  # over max_body_bytes: reading it would be 413
    r = post(relay, origin=origin, content=huge)
    assert r.status_code == 403
    assert "allowed_origins" in r.json()["message"]
    assert "access-control-allow-origin" not in r.headers
    assert "set-cookie" not in r.headers
    assert "x-ratelimit-limit" not in r.headers  # not even the rate limit was consulted


def test_an_inactive_space_is_403_with_cors(relay: RelayProcess) -> None:
    r = post(relay, [{"event_name": "contact"}], key="pk_gone", origin="https://gone.example")
    assert r.status_code == 403 and "inactive" in r.json()["message"]
    assert r.headers["access-control-allow-origin"] == "https://gone.example"


def test_preflight_for_an_allowed_origin_only(relay: RelayProcess) -> None:
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    ok = httpx.options(f"{relay.url}/e?k=pk_acme", headers={"Origin": ORIGIN, **asked})
    assert ok.status_code == 204
    assert_cors(ok)
    assert ok.headers["access-control-allow-methods"] == "POST"
    assert ok.headers["access-control-allow-headers"].lower() == "content-type"
    assert int(ok.headers["access-control-max-age"]) > 0
    no = httpx.options(
        f"{relay.url}/e?k=pk_acme", headers={"Origin": "https://evil.example", **asked}
    )
    assert no.status_code == 403 and "access-control-allow-origin" not in no.headers


# --- answers -------------------------------------------------------------------------------


def test_a_batch_is_accepted_and_answered_with_counts(relay: RelayProcess) -> None:
    r = post(
        relay,
        [
            {"event_name": "view_content", "event_id": "acc-1", "url": "https://acme.example/"},
            {"event_name": "custom_event_3", "event_id": "acc-2", "email": "a@b.co"},
        ],
    )
    assert r.status_code == 202
    assert r.json() == {"accepted": 2, "merged": 0, "duplicates": 0, "refused": [], "dropped": []}
    assert r.headers["content-type"] == "application/json"
    assert_cors(r)
    assert r.headers["x-ratelimit-limit"] == "600"
    assert len(stored(relay, "acc-1")) == len(stored(relay, "acc-2")) == 1


def test_json_content_type_is_accepted_too(relay: RelayProcess) -> None:
    r = post(relay, [{"event_name": "contact"}], headers={"Content-Type": "application/json"})
    assert r.status_code == 202 and r.json()["accepted"] == 1


def test_a_mixed_batch_accepts_the_good_and_says_why_the_rest_was_refused(
    relay: RelayProcess,
) -> None:
    r = post(
        relay,
        [
            {"event_name": "purchase", "event_id": "mix-1", "amount": 49},
            {"event_name": "bought", "event_id": "mix-2"},
            "not an event",
            {"event_name": "lead_generated", "event_id": "mix-4", "value": 3, "email": "nope"},
            {"event_name": "contact", "event_id": 17},
        ],
    )
    assert r.status_code == 202
    body = r.json()
    assert (body["accepted"], body["duplicates"]) == (1, 0)
    refused = {entry["index"]: entry for entry in body["refused"]}
    assert sorted(refused) == [1, 2, 3, 4]
    assert refused[1]["event_id"] == "mix-2" and set(refused[1]["errors"]) == {"event_name"}
    assert refused[2]["event_id"] is None and set(refused[2]["errors"]) == {"event"}
    assert refused[3]["event_id"] == "mix-4" and set(refused[3]["errors"]) == {"value", "email"}
    assert refused[4]["event_id"] is None and set(refused[4]["errors"]) == {"event_id"}
    assert all(
        isinstance(m, str) for e in refused.values() for ms in e["errors"].values() for m in ms
    )
    assert len(stored(relay, "mix-1")) == 1
    assert stored(relay, "mix-2") == stored(relay, "mix-4") == []


def test_a_bad_optional_user_field_is_dropped_and_the_event_kept(relay: RelayProcess) -> None:
    """An empty email from a blank form field refuses no event of the visit: the field goes,
    the event stays, and the answer says what was dropped. The API is still refused whole."""
    r = post(
        relay,
        [
            {"event_name": "sign_up", "event_id": "drop-1", "email": "", "first_name": "Ann"},
            {"event_name": "purchase", "event_id": "drop-2", "amount": 5, "email": "jane"},
            {"event_name": "contact", "event_id": "drop-3", "email": "", "value": 1},
            {"event_name": "contact", "event_id": "drop-4", "phone": 5550100},
        ],
    )
    assert r.status_code == 202
    body = r.json()
    assert (body["accepted"], [e["index"] for e in body["refused"]]) == (3, [2])
    # with another problem, nothing is dropped: the event is refused with every problem
    assert set(body["refused"][0]["errors"]) == {"email", "value"}
    dropped = {entry["index"]: entry for entry in body["dropped"]}
    assert sorted(dropped) == [0, 1, 3]
    assert dropped[0]["event_id"] == "drop-1" and set(dropped[0]["errors"]) == {"email"}
    assert "jane" in dropped[1]["errors"]["email"][0]
    assert set(dropped[3]["errors"]) == {"phone"}
    [sign_up] = stored(relay, "drop-1")
    assert "email" not in sign_up and sign_up["first_name"] == "Ann"
    [purchase] = stored(relay, "drop-2")
    assert "email" not in purchase and purchase["amount"] == 5
    assert stored(relay, "drop-3") == []

    api = httpx.post(
        f"{relay.url}/public-api/v1/events/track",
        json={"event_name": "contact", "email": "", "comet_token": "t", "idempotency_key": "api-x"},
        headers={"Authorization": "Bearer key-acme-write"},
    )
    assert api.status_code == 422 and "email" in api.json()["errors"]
    assert stored(relay, "api-x") == []


def test_a_batch_of_only_refused_events_is_still_202(relay: RelayProcess) -> None:
    r = post(relay, [{"event_name": "nope"}])
    assert r.status_code == 202
    assert r.json()["accepted"] == 0 and len(r.json()["refused"]) == 1


def test_an_empty_batch_is_202(relay: RelayProcess) -> None:
    r = post(relay, [])
    assert r.status_code == 202 and r.json() == {"accepted": 0, "merged": 0, "duplicates": 0, "refused": [], "dropped": []}


def test_a_resent_event_id_is_a_duplicate(relay: RelayProcess) -> None:
    event = {"event_name": "purchase", "event_id": "dup-b-1", "amount": 5}
    first = post(relay, [event, event])
    assert first.json() == {"accepted": 1, "merged": 0, "duplicates": 1, "refused": [], "dropped": []}
    again = post(relay, [event])
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "merged": 0, "duplicates": 1, "refused": [], "dropped": []}
    assert len(stored(relay, "dup-b-1")) == 1


def test_a_body_over_the_limit_is_413_with_cors(relay: RelayProcess) -> None:
    big = [{"event_name": "contact", "order_name": "x" * 5000}]
    r = post(relay, big)
    assert r.status_code == 413 and "4096 bytes" in r.json()["message"]
    assert "fewer events" in r.json()["message"]
    assert_cors(r)


def test_a_batch_over_the_limit_is_413(relay: RelayProcess) -> None:
    r = post(relay, [{"event_name": "contact", "event_id": f"lim-{i}"} for i in range(6)])
    assert r.status_code == 413
    assert "6 events" in r.json()["message"] and "at most 5" in r.json()["message"]
    assert_cors(r)
    assert stored(relay, "lim-0") == []


@pytest.mark.parametrize("content", [b"", b"nope", b"[]", b'{"events": []}', b'{"e": 1}'])
def test_a_body_that_is_not_a_batch_is_422(relay: RelayProcess, content: bytes) -> None:
    r = post(relay, content=content)
    assert r.status_code == 422 and r.json()["message"]
    assert_cors(r)


# --- what only the relay sets ----------------------------------------------------------------


def test_the_browser_cannot_set_ip_user_agent_token_or_idempotency_key(relay: RelayProcess) -> None:
    r = post(
        relay,
        [
            {
                "event_name": "purchase",
                "event_id": "own-1",
                "fingerprint": "fp-abc",
                "ip": "6.6.6.6",
                "user_agent": "forged-agent",
                "comet_token": "forged-token",
                "idempotency_key": "forged-key",
                "amount": 19.5,
                "url": "https://acme.example/checkout",
            }
        ],
    )
    assert r.json()["accepted"] == 1
    (event,) = stored(relay, "own-1")
    assert event["ip"] == "127.0.0.1"
    assert event["user_agent"] == CHROME
    assert event["comet_token"] == visitor_of(r)
    assert event["idempotency_key"] == "own-1"
    assert stored(relay, "forged-key") == []
    assert (event["fingerprint"], event["amount"]) == ("fp-abc", 19.5)
    assert isinstance(event["event_time"], int) and abs(event["event_time"] - time.time()) < 60


def test_without_a_fingerprint_the_token_identifies_and_no_ip_is_sent(relay: RelayProcess) -> None:
    r = post(relay, [{"event_name": "view_content", "event_id": "nofp-1", "ip": "6.6.6.6"}])
    assert r.json()["accepted"] == 1
    (event,) = stored(relay, "nofp-1")
    assert "ip" not in event and "fingerprint" not in event
    assert event["comet_token"] == visitor_of(r)


def test_an_event_without_id_gets_one(relay: RelayProcess) -> None:
    r = post(relay, [{"event_name": "schedule", "email": "no-id@acme.example"}])
    assert r.json()["accepted"] == 1


def test_event_time_is_kept_only_when_recent(relay: RelayProcess) -> None:
    now = time.time()
    sent = {
        "t-recent": now - 3 * 86400,
        "t-old": now - 8 * 86400,
        "t-future": now + 3600,
        "t-text": "2026-01-01T00:00:00Z",
    }
    events = [{"event_name": "contact", "event_id": k, "event_time": t} for k, t in sent.items()]
    assert post(relay, events).json()["accepted"] == 4
    assert stored(relay, "t-recent")[0]["event_time"] == sent["t-recent"]
    for key in ("t-old", "t-future", "t-text"):
        kept = stored(relay, key)[0]["event_time"]
        assert isinstance(kept, int) and abs(kept - now) < 60, key


def test_attribution_is_filled_from_the_event_url(relay: RelayProcess) -> None:
    url = "https://acme.example/?utm_source=google&utm_medium=cpc&comet_campaign=explicit"
    event = {"event_name": "view_content", "event_id": "attr-1", "url": url, "comet_source": "own"}
    assert post(relay, [event]).json()["accepted"] == 1
    (kept,) = stored(relay, "attr-1")
    assert (kept["comet_source"], kept["comet_type"], kept["comet_campaign"]) == (
        "own",
        "cpc",
        "explicit",
    )


# --- the visitor cookie --------------------------------------------------------------------


def test_the_cookie_is_httponly_lax_long_lived_and_not_secure_on_http(relay: RelayProcess) -> None:
    r = post(relay, [{"event_name": "contact"}])
    morsel = visitor_cookie(r)["_comet"]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["max-age"] == str(400 * 86400)
    assert morsel["path"] == "/"
    assert not morsel["secure"]
    assert not morsel["domain"]


def test_the_cookie_is_secure_behind_a_trusted_https_proxy(relay: RelayProcess) -> None:
    r = post(relay, [{"event_name": "contact"}], headers={"X-Forwarded-Proto": "https"})
    assert visitor_cookie(r)["_comet"]["secure"] is True


def test_the_cookie_is_set_on_refusals_too(relay: RelayProcess) -> None:
    r = post(relay, content=b"nope")
    assert r.status_code == 422 and visitor_of(r)


def test_a_valid_cookie_keeps_the_visitor_and_is_refreshed(relay: RelayProcess) -> None:
    first = post(relay, [{"event_name": "contact"}])
    cookie = visitor_cookie(first)["_comet"].value
    event = {"event_name": "contact", "event_id": "same-visitor"}
    second = post(relay, [event], headers={"Cookie": f"_comet={cookie}"})
    assert visitor_of(second) == visitor_of(first)
    assert "set-cookie" in second.headers
    assert stored(relay, "same-visitor")[0]["comet_token"] == visitor_of(first)


@pytest.mark.parametrize("kind", ["tampered", "forged", "garbage", "raw-id"])
def test_a_bad_cookie_is_replaced_never_trusted(relay: RelayProcess, kind: str) -> None:
    victim = "v" * 22
    good = TOKENS.issue(victim)
    at = good.rindex(".") + 1
    bad = {
        "tampered": good[:at] + ("A" if good[at] != "A" else "B") + good[at + 1 :],
        "forged": VisitorTokens(["attacker-secret-0123456789"]).issue(victim),
        "garbage": "not-a-token",
        "raw-id": victim,
    }[kind]
    event = {"event_name": "contact", "event_id": f"bad-cookie-{kind}"}
    r = post(relay, [event], headers={"Cookie": f"_comet={bad}"})
    fresh = visitor_of(r)
    assert fresh != victim
    assert stored(relay, f"bad-cookie-{kind}")[0]["comet_token"] == fresh


# --- bots ----------------------------------------------------------------------------------


def test_bots_are_counted_and_dropped(relay: RelayProcess) -> None:
    before = httpx.get(f"{relay.url}/healthz").json()["bot_events_dropped"]
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    events = [{"event_name": "view_content", "event_id": f"bot-{i}"} for i in range(3)]
    r = post(relay, events, headers={"User-Agent": googlebot})
    assert r.status_code == 202
    assert r.json() == {"accepted": 0, "merged": 0, "duplicates": 0, "refused": [], "dropped": [], "bot": True}
    assert_cors(r)
    assert all(stored(relay, f"bot-{i}") == [] for i in range(3))
    assert httpx.get(f"{relay.url}/healthz").json()["bot_events_dropped"] == before + 3


def test_headless_chrome_is_not_a_bot(relay: RelayProcess) -> None:
    headless = CHROME.replace("Chrome/", "HeadlessChrome/")
    r = post(
        relay,
        [{"event_name": "view_content", "event_id": "headless-1"}],
        headers={"User-Agent": headless},
    )
    assert r.json()["accepted"] == 1
    assert stored(relay, "headless-1")[0]["user_agent"] == headless


# --- client address through trusted proxies -------------------------------------------------


def test_x_forwarded_for_from_a_trusted_proxy_gives_the_client_address(relay: RelayProcess) -> None:
    event = {"event_name": "contact", "event_id": "xff-1", "fingerprint": "fp"}
    r = post(relay, [event], headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.json()["accepted"] == 1
    assert stored(relay, "xff-1")[0]["ip"] == "203.0.113.9"
    # The right-most address that is not a trusted proxy is the client; the rest is hearsay.
    event = {**event, "event_id": "xff-2"}
    post(relay, [event], headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 127.0.0.1"})
    assert stored(relay, "xff-2")[0]["ip"] == "198.51.100.4"


# --- the snippet -----------------------------------------------------------------------------


def served_snippet() -> bytes:
    for name in ("comet.min.js", "comet.js"):
        if (ROOT / "static" / name).is_file():
            return (ROOT / "static" / name).read_bytes()
    pytest.fail("static/ holds no snippet")


def test_the_snippet_is_served_compressed_cacheable_with_an_etag(relay: RelayProcess) -> None:
    r = httpx.get(f"{relay.url}/comet.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "public, max-age=3600"
    assert "Accept-Encoding" in r.headers["vary"]
    assert r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) == len(gzip.compress(served_snippet(), 9, mtime=0))
    assert r.content == served_snippet()  # httpx decoded it
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    plain = httpx.get(f"{relay.url}/comet.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == served_snippet()
    assert plain.headers["etag"] != etag  # another representation, another strong ETag
    assert hashlib.sha256(plain.content).hexdigest()[:32] in plain.headers["etag"]


@pytest.mark.parametrize("encoding", ["gzip", "identity"])
def test_the_snippet_answers_304_to_its_etag(relay: RelayProcess, encoding: str) -> None:
    first = httpx.get(f"{relay.url}/comet.js", headers={"Accept-Encoding": encoding})
    etag = first.headers["etag"]
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = httpx.get(
            f"{relay.url}/comet.js", headers={"Accept-Encoding": encoding, "If-None-Match": sent}
        )
        assert again.status_code == 304, sent
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "public, max-age=3600"
    stale = httpx.get(f"{relay.url}/comet.js", headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200


@pytest.mark.parametrize("header", ["gzip;q=0", "br", "identity, gzip;q=0.0"])
def test_no_gzip_unless_the_client_accepts_it(relay: RelayProcess, header: str) -> None:
    r = httpx.get(f"{relay.url}/comet.js", headers={"Accept-Encoding": header})
    assert "content-encoding" not in r.headers and r.content == served_snippet()


def test_the_alias_serves_the_same_snippet(relay: RelayProcess) -> None:
    a = httpx.get(f"{relay.url}/comet.js")
    b = httpx.get(f"{relay.url}/assets/app-7.js")
    assert b.status_code == 200 and b.content == a.content
    assert b.headers["etag"] == a.headers["etag"]


def test_no_demo_page_outside_the_embedded_default(relay: RelayProcess) -> None:
    assert httpx.get(f"{relay.url}/demo").status_code == 404


def test_the_api_is_unchanged_beside_the_browser_routes(relay: RelayProcess) -> None:
    r = httpx.post(
        f"{relay.url}/public-api/v1/events/track",
        json={"event_name": "contact", "email": "api@acme.example", "idempotency_key": "api-1"},
        headers={"Authorization": "Bearer key-acme-write"},
    )
    assert r.status_code == 202 and r.json()["status"] == 202
    assert stored(relay, "api-1") == [
        {"event_name": "contact", "email": "api@acme.example", "idempotency_key": "api-1"}
    ]


def test_relay_log_has_no_tracebacks(relay: RelayProcess) -> None:
    assert "Traceback" not in Path(relay.log).read_text()


def test_the_stub_line_is_served_beside_the_snippet(relay: RelayProcess) -> None:
    """For a page whose Content-Security-Policy allows no inline script (docs/snippet.md)."""
    r = httpx.get(f"{relay.url}/comet-stub.js", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert r.content == (Path(__file__).resolve().parent.parent / "static" / "comet-stub.js").read_bytes()
    assert "max-age" in r.headers["cache-control"] and r.headers["etag"]
