"""What the relay adds to a browser event: attribution, event time, bots, relay-only fields."""

from __future__ import annotations

import json

import pytest

from relay.enrich.bots import is_bot
from relay.enrich.browser_event import (
    attribution_from_url,
    browser_event,
    drop_bad_user_fields,
    event_time,
)
from relay.enrich.client import Client
from relay.errors import Invalid, PayloadTooLarge
from relay.rules.batch import parse_batch

NOW = 1_800_000_000.0
DAY = 86400
CLIENT = Client(ip="203.0.113.7", user_agent="Mozilla/5.0 Test", comet_token="t" * 22)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


# --- attribution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://s.example/", {}),
        ("https://s.example/?q=1&utm_x=2", {}),
        (
            (
                "https://s.example/p?utm_source=google&utm_medium=cpc&utm_campaign=spring"
                "&utm_term=shoes&utm_content=ad-9"
            ),
            {
                "comet_source": "google",
                "comet_type": "cpc",
                "comet_campaign": "spring",
                "comet_keyword": "shoes",
                "comet_ad_id": "ad-9",
            },
        ),
        (
            "https://s.example/?utm_source=google&comet_source=bing&comet_network=search",
            {"comet_source": "bing", "comet_network": "search"},
        ),
        (
            (
                "https://s.example/?comet_ad_group=g1&comet_ad_id=7&utm_content=x&comet_keyword=k"
                "&comet_campaign=c&comet_type=paid"
            ),
            {
                "comet_ad_group": "g1",
                "comet_ad_id": "7",
                "comet_keyword": "k",
                "comet_campaign": "c",
                "comet_type": "paid",
            },
        ),
        ("https://s.example/?utm_source=&utm_medium=email", {"comet_type": "email"}),
        ("https://s.example/?utm_source=a&utm_source=b", {"comet_source": "a"}),
        ("https://s.example/?utm_campaign=big%20sale+now", {"comet_campaign": "big sale now"}),
        ("https://s.example/#utm_source=google", {}),
        ("https://[::1/?utm_source=x", {}),
        ("not a url", {}),
    ],
)
def test_attribution_from_url(url: str, expected: dict[str, str]) -> None:
    assert attribution_from_url(url) == expected


# --- event time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (None, int(NOW)),
        (NOW - 3600, NOW - 3600),
        (int(NOW) - 6 * DAY, int(NOW) - 6 * DAY),
        (NOW - 7 * DAY, NOW - 7 * DAY),
        (NOW - 7 * DAY - 1, int(NOW)),
        (NOW + 299, NOW + 299),
        (NOW + 301, int(NOW)),
        ((NOW - 60) * 1000, int(NOW)),  # milliseconds
        ("2027-01-15T08:00:00Z", int(NOW)),
        (True, int(NOW)),
        (float("nan"), int(NOW)),
        (float("inf"), int(NOW)),
        (-5, int(NOW)),
    ],
)
def test_event_time_is_kept_only_when_recent(sent: object, expected: float) -> None:
    assert event_time(sent, NOW) == expected


# --- bots ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        (
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
            "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"
        ),
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Mozilla/5.0 (compatible; SomeNewCrawler/1.0; +http://crawler.example/bot.html) spider",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; GPTBot/1.2",
    ],
)
def test_crawlers_are_bots(ua: str) -> None:
    assert is_bot(ua)


@pytest.mark.parametrize(
    "ua",
    [
        CHROME,
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/120.0.0.0 Safari/537.36"
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.0 Safari/605.1.15 Playwright/1.45"
        ),
        "",
        None,
    ],
)
def test_people_and_automated_browsers_are_not_bots(ua: str | None) -> None:
    assert not is_bot(ua)


def test_a_giant_user_agent_is_checked_by_its_start() -> None:
    assert not is_bot(CHROME + "x" * 100_000)
    assert is_bot("Googlebot/2.1 " + "x" * 100_000)


# --- one browser event ---------------------------------------------------------------------


def test_the_browser_cannot_set_relay_fields() -> None:
    sent = {
        "event_name": "purchase",
        "event_id": "ev-1",
        "fingerprint": "fp-1",
        "ip": "1.2.3.4",
        "user_agent": "forged",
        "comet_token": "forged",
        "idempotency_key": "forged",
        "amount": 49,
    }
    event, errors = browser_event(sent, CLIENT, frozenset(), NOW)
    assert errors == {}
    assert event == {
        "event_name": "purchase",
        "fingerprint": "fp-1",
        "amount": 49,
        "idempotency_key": "ev-1",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 Test",
        "comet_token": "t" * 22,
        "event_time": int(NOW),
    }


def test_ip_is_set_only_with_a_fingerprint() -> None:
    event, errors = browser_event(
        {"event_name": "contact", "ip": "1.2.3.4"}, CLIENT, frozenset(), NOW
    )
    assert errors == {}
    assert "ip" not in event and "fingerprint" not in event
    assert event["comet_token"] == "t" * 22
    assert "idempotency_key" not in event  # the outbox entry gets a generated one


def test_a_long_user_agent_is_cut_to_its_bound_before_it_is_stored() -> None:
    # The header is the sender's to write, up to the head's 16 KiB: the event keeps 512.
    client = Client(ip=None, user_agent="Mozilla/5.0 " + "x" * 15_000, comet_token="t" * 22)
    event, errors = browser_event({"event_name": "contact"}, client, frozenset(), NOW)
    assert errors == {}
    assert event["user_agent"] == ("Mozilla/5.0 " + "x" * 15_000)[:512]


def test_no_user_agent_header_means_no_user_agent_field() -> None:
    client = Client(ip=None, user_agent=None, comet_token="t" * 22)
    event, errors = browser_event({"event_name": "contact"}, client, frozenset(), NOW)
    assert errors == {} and "user_agent" not in event and "ip" not in event


def test_a_recent_event_time_is_kept() -> None:
    sent = {"event_name": "lead_generated", "event_time": NOW - 600}
    event, _ = browser_event(sent, CLIENT, frozenset(), NOW)
    assert event["event_time"] == NOW - 600
    event, _ = browser_event({**sent, "event_time": NOW - 30 * DAY}, CLIENT, frozenset(), NOW)
    assert event["event_time"] == int(NOW)


def test_attribution_fills_only_what_the_event_lacks() -> None:
    sent = {
        "event_name": "view_content",
        "url": "https://s.example/?utm_source=google&utm_medium=cpc&utm_campaign=spring",
        "comet_source": "newsletter",
        "comet_type": None,
    }
    event, errors = browser_event(sent, CLIENT, frozenset(), NOW)
    assert errors == {}
    assert (event["comet_source"], event["comet_type"], event["comet_campaign"]) == (
        "newsletter",
        "cpc",
        "spring",
    )


def test_problems_name_the_fields_the_browser_sent() -> None:
    sent = {"event_name": "bought", "event_id": 42, "value": 3, "url": "nope"}
    _, errors = browser_event(sent, CLIENT, frozenset(), NOW)
    assert set(errors) == {"event_name", "event_id", "value", "url"}
    assert any("amount" in message for message in errors["value"])


def test_custom_events_follow_the_space() -> None:
    ok, errors = browser_event(
        {"event_name": "custom_event_3"}, CLIENT, frozenset({"custom_event_3"}), NOW
    )
    assert errors == {} and ok["event_name"] == "custom_event_3"
    _, errors = browser_event(
        {"event_name": "custom_event_4"}, CLIENT, frozenset({"custom_event_3"}), NOW
    )
    assert "event_name" in errors


def test_bad_optional_user_fields_are_dropped_when_they_are_the_only_problems() -> None:
    sent = {"event_name": "sign_up", "email": "", "phone": 7, "first_name": "Ann", "amount": 3}
    event, errors, dropped = drop_bad_user_fields(
        *browser_event(sent, CLIENT, frozenset(), NOW), frozenset()
    )
    assert errors == {} and set(dropped) == {"email", "phone"}
    assert "email" not in event and "phone" not in event and event["first_name"] == "Ann"
    assert event["comet_token"] == "t" * 22  # still identified
    # another problem: nothing is dropped, every problem is listed
    bad = {**sent, "event_name": "bought"}
    event, errors, dropped = drop_bad_user_fields(
        *browser_event(bad, CLIENT, frozenset(), NOW), frozenset()
    )
    assert set(errors) == {"event_name", "email", "phone"} and dropped == {}
    # nothing wrong: nothing dropped
    good = {"event_name": "sign_up", "email": "ann@example.com"}
    event, errors, dropped = drop_bad_user_fields(
        *browser_event(good, CLIENT, frozenset(), NOW), frozenset()
    )
    assert (errors, dropped, event["email"]) == ({}, {}, "ann@example.com")


@pytest.mark.parametrize("sent", ["purchase", 7, None, ["event_name", "purchase"]])
def test_an_event_that_is_not_an_object_is_refused(sent: object) -> None:
    assert browser_event(sent, CLIENT, frozenset(), NOW) == (
        {},
        {"event": ["must be a JSON object holding one event."]},
    )


# --- the batch -----------------------------------------------------------------------------


def test_parse_batch_returns_the_events_unchecked() -> None:
    body = json.dumps({"e": [{"event_name": "purchase"}, 5], "v": 2}).encode()
    assert parse_batch(body, 50) == [{"event_name": "purchase"}, 5]
    assert parse_batch(b'{"e": []}', 50) == []


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[]", b'{"e": {}}', b'{"events": []}', b'{"e": null}', b"\xff"]
)
def test_parse_batch_refuses_other_shapes(raw: bytes) -> None:
    with pytest.raises(Invalid):
        parse_batch(raw, 50)


def test_parse_batch_limits_the_number_of_events() -> None:
    assert len(parse_batch(json.dumps({"e": [{}] * 3}).encode(), 3)) == 3
    with pytest.raises(PayloadTooLarge) as caught:
        parse_batch(json.dumps({"e": [{}] * 4}).encode(), 3)
    assert "4 events" in caught.value.message and "at most 3" in caught.value.message
