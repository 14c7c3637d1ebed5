"""Security: visitor tokens are never trusted unverified; no secret shows in answers or logs.

One real relay, `serve --access-log` (the most it ever logs), with two secret keys (a rotation
in progress: OLD still verifies, NEW signs), an API key, and an upstream reached with its own
token. The `traffic` fixture sends some of every kind (the token tests add theirs); the leak
tests read every answer collected and the relay's whole output (stdout and stderr) for any of
the secrets, the visitor tokens and the visitor ids.

tests/test_tokens.py proves the signing rules in-process, and tests/test_browser_http.py that a
tampered, forged or garbage cookie is replaced; this adds expiry, a retired key, other
serializers over HTTP, rotation over HTTP, and the absence of secrets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx
import pytest
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from relay.auth.visitor import SALT, VisitorTokens
from tests.support import RelayProcess, Space, UpstreamProcess, wait_for, write_config
from tests.test_api_http import stored

PATH = "/public-api/v1/events/track"
ORIGIN = "https://acme.example"
OLD = "old-secret-key-0123456789abcdef"
NEW = "new-secret-key-fedcba9876543210"
RETIRED = "retired-secret-key-00000000000"
API_KEY = "key-acme-secret-api-key-0123456789"
UPSTREAM_TOKEN = "upstream-token-do-not-leak-0123456789"
DAY = 86400

ANSWERS: list[httpx.Response] = []  # every answer of the module, for the leak checks
SENT_COOKIES: list[str] = []
VISITORS: list[str] = []


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProcess]:
    with UpstreamProcess(tmp_path_factory.mktemp("security-upstream")) as up:
        # A retry, a dead letter, then deliveries: every path of the forwarder that logs.
        # (An upstream whose message echoes the token is not covered: the relay would log it.)
        up.control(
            script=[{"status": 503, "message": "busy"}, {"status": 422, "message": "refused"}],
            default={"status": 202},
        )
        yield up


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess
) -> Iterator[RelayProcess]:
    directory = tmp_path_factory.mktemp("security-secrets")
    space = Space(
        "acme",
        keys={API_KEY: ["events:write"]},
        extra=f'upstream_url = "{upstream.track_url}"\nupstream_token_env = "ACME_TOKEN"',
    )
    config = write_config(directory, [space])
    text = config.read_text().replace(json.dumps(["test-secret-key-0123456789abcdef"]), "X")
    config.write_text(text.replace("secret_keys = X", f'secret_keys = ["{OLD}", "{NEW}"]'))
    env = {"ACME_TOKEN": UPSTREAM_TOKEN}
    with RelayProcess(config, env=env, args=["--access-log"]) as proc:
        yield proc


def browse(relay: RelayProcess, event_id: str, cookie: str | None = None) -> httpx.Response:
    """One browser event, sent with the visitor cookie `cookie` (or none)."""
    headers = {"Origin": ORIGIN, "Content-Type": "text/plain"}
    if cookie is not None:
        headers["Cookie"] = f"_comet={cookie}"
        SENT_COOKIES.append(cookie)
    body = json.dumps({"e": [{"event_name": "contact", "event_id": event_id}]})
    r = httpx.post(f"{relay.url}/e?k=pk_acme", content=body, headers=headers, timeout=10)
    ANSWERS.append(r)
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    return r


def issued(response: httpx.Response) -> str:
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar["_comet"].value


def token_of(relay: RelayProcess, event_id: str) -> str:
    (event,) = stored(relay, event_id)
    token = event["comet_token"]
    assert isinstance(token, str)
    VISITORS.append(token)
    return token


VICTIM = "victim-visitor-id-0001"


def signed(keys: list[str], at: float | None = None) -> str:
    clock = (lambda: at) if at is not None else time.time
    return VisitorTokens(keys, clock=clock).issue(VICTIM)


BAD_TOKENS = {
    "expired": lambda: signed([NEW], time.time() - 401 * DAY),
    "signed in the future": lambda: signed([NEW], time.time() + 3600),
    "retired key": lambda: signed([RETIRED]),
    "attacker's key": lambda: signed(["attacker-secret-0123456789"]),
    "other salt": lambda: URLSafeTimedSerializer(NEW, salt="other").dumps(VICTIM),
    "no timestamp": lambda: URLSafeSerializer(NEW, salt=SALT).dumps(VICTIM),
    "no signature": lambda: signed([NEW]).rsplit(".", 1)[0],
    "empty signature": lambda: signed([NEW]).rsplit(".", 1)[0] + ".",
    "bare visitor id": lambda: VICTIM,
    "not a visitor id": lambda: URLSafeTimedSerializer(NEW, salt=SALT).dumps(["a", 1]),
    "short visitor id": lambda: URLSafeTimedSerializer(NEW, salt=SALT).dumps("abc"),
    "compressed bomb": lambda: "." + "A" * 3000 + ".AAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA",
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_bad_visitor_token_is_replaced_by_a_new_visitor(relay: RelayProcess, kind: str) -> None:
    event_id = f"bad-{kind.replace(' ', '-')}"
    r = browse(relay, event_id, BAD_TOKENS[kind]())
    fresh = token_of(relay, event_id)
    assert fresh != VICTIM
    assert VisitorTokens([NEW]).verify(issued(r)) == fresh


def test_an_expired_token_is_still_good_a_day_before_it_expires(relay: RelayProcess) -> None:
    r = browse(relay, "nearly-expired", signed([NEW], time.time() - 399 * DAY))
    assert token_of(relay, "nearly-expired") == VICTIM
    assert VisitorTokens([NEW]).verify(issued(r)) == VICTIM  # and its life starts anew


def test_rotation_keeps_a_token_of_the_old_key_and_resigns_it_with_the_new(
    relay: RelayProcess,
) -> None:
    before = VisitorTokens([OLD]).issue("rotating-visitor-00001")
    r = browse(relay, "rotation-1", before)
    assert token_of(relay, "rotation-1") == "rotating-visitor-00001"
    after = issued(r)
    assert VisitorTokens([NEW]).verify(after) == "rotating-visitor-00001"
    assert VisitorTokens([OLD]).verify(after) is None  # signed by NEW: OLD may now be retired
    SENT_COOKIES.append(after)


def test_a_new_visitor_gets_a_token_and_keeps_it(relay: RelayProcess) -> None:
    first = browse(relay, "new-visitor-1")
    visitor = token_of(relay, "new-visitor-1")
    second = browse(relay, "new-visitor-2", issued(first))
    assert token_of(relay, "new-visitor-2") == visitor
    SENT_COOKIES.append(issued(second))


@pytest.fixture(scope="module")
def traffic(relay: RelayProcess, upstream: UpstreamProcess) -> list[httpx.Response]:
    """Some of every kind of traffic, whichever tests ran before: API events that meet a 503,
    a 422 and then 202s upstream (a retry, a dead letter, deliveries: every path of the
    forwarder that logs), refused events, a bad key, bad and good cookies, the other routes.
    """
    url = relay.url + PATH
    good = {"Authorization": f"Bearer {API_KEY}"}
    for n in range(3):
        event = {"event_name": "purchase", "email": "a@b.co", "idempotency_key": f"api-{n}"}
        ANSWERS.append(httpx.post(url, json=event, headers=good, timeout=10))
    ANSWERS.append(httpx.post(url, json={"event_name": "nope"}, headers=good, timeout=10))
    ANSWERS.append(httpx.post(url, content=b"\xff{", headers=good, timeout=10))
    bad = {"Authorization": f"Bearer {API_KEY}x"}
    ANSWERS.append(httpx.post(url, json={"event_name": "contact"}, headers=bad, timeout=10))
    assert [a.status_code for a in ANSWERS[-6:]] == [202, 202, 202, 422, 422, 401]
    for kind in ("expired", "attacker's key"):
        browse(relay, f"traffic-{kind}", BAD_TOKENS[kind]())
    rotated = browse(relay, "traffic-rotation", VisitorTokens([OLD]).issue(VICTIM))
    browse(relay, "traffic-again", issued(rotated))
    for event_id in ("traffic-expired", "traffic-rotation"):
        token_of(relay, event_id)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/debug", "/comet.js"):
        ANSWERS.append(httpx.get(relay.url + path, timeout=10))

    def settled() -> bool:
        return len([r for r in upstream.received() if r["status"] == 202]) >= 2

    wait_for(settled, 30, "the upstream to answer the retry and the rest")
    wait_for(lambda: "dead event" in relay.log.read_text(errors="replace"), 20, "a dead letter")
    return ANSWERS


def test_the_upstream_is_sent_its_token(
    traffic: list[httpx.Response], upstream: UpstreamProcess
) -> None:
    sent = upstream.received()
    assert len(sent) >= 4
    assert {r["authorization"] for r in sent} == {f"Bearer {UPSTREAM_TOKEN}"}


SECRETS = {
    "a secret key (old)": OLD,
    "a secret key (new)": NEW,
    "the API key": API_KEY,
    "the upstream token": UPSTREAM_TOKEN,
}


def test_no_answer_shows_a_secret_or_echoes_a_token(traffic: list[httpx.Response]) -> None:
    for answer in traffic:
        headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        body = answer.text
        for what, secret in SECRETS.items():
            assert secret not in headers + body, f"{what} in the answer to {answer.request.url}"
        for visitor in VISITORS:  # HttpOnly: only in the cookie, never readable by a script
            assert visitor not in body, f"a visitor id in the answer to {answer.request.url}"
        for cookie in SENT_COOKIES:
            assert cookie not in body


def test_the_log_shows_no_secret_and_no_token(
    relay: RelayProcess, traffic: list[httpx.Response]
) -> None:
    log = relay.log.read_text(errors="replace")
    for what, secret in SECRETS.items():
        assert secret not in log, f"{what} in the log"
    for cookie in SENT_COOKIES:
        assert cookie not in log, "a visitor token in the log"
    for visitor in VISITORS:
        assert visitor not in log, "a visitor id in the log"
    assert "Traceback" not in log
