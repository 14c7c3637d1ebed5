"""Property tests of the contract's rules (relay.rules) and the browser's batch (relay.rules.batch, relay.enrich).

Events are drawn field by field, each absent, null, good or bad for its rule, so every drawn
event comes with the set of fields it breaks; the rules must name exactly that set. So an
event the relay accepts passes every rule, and one that breaks a rule is refused with that
field named. Parsing any bytes raises nothing but the validation error (422), with `errors`.
Bounded and deterministic in CI; `FUZZ_EXAMPLES=5000` makes it a long run.
"""

from __future__ import annotations

import ipaddress
import json
import math
import string
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from relay import rules
from relay.enrich.browser_event import MAX_LISTED, RELAY_ONLY, browser_event
from relay.enrich.client import Client
from relay.errors import Invalid, PayloadTooLarge
from relay.rules import CUSTOM_EVENTS, FIELDS, STANDARD_EVENTS, Kind
from relay.rules.batch import parse_batch
from tests.fuzz_support import fuzz_settings

CUSTOM = frozenset({"custom_event_3", "custom_event_17"})
EXAMPLES = 200
NOW = 1_714_566_600.0
Drawn = tuple[dict[str, object], set[str]]  # an event, and the fields whose rule it breaks

# --- JSON values, and values of another JSON type than a rule wants ---------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers() | finite_floats | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "null"


def other_type(*wanted: str) -> st.SearchStrategy[object]:
    """JSON values that are neither null nor of a `wanted` type."""
    return json_values.filter(lambda value: json_type(value) not in {"null", *wanted})


# --- good and bad values of each kind, built so that which they are is known ----------------

letters = st.text(string.ascii_letters, min_size=1, max_size=12)
# Text a valid field may hold: anything but NUL (valid JSON as \u0000, refused by the rules).
texts = partial(st.text, st.characters(codec="utf-8", exclude_characters="\x00"))
no_at = texts(min_size=1, max_size=40).filter(lambda text: "@" not in text)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
date_times = st.builds(
    lambda moment, timespec, sep, zulu: _iso(moment, timespec, sep, zulu),
    st.datetimes(timezones=st.none() | st.just(UTC) | offsets),
    st.sampled_from(["minutes", "seconds", "milliseconds", "microseconds"]),
    st.sampled_from(["T", " ", "t"]),
    st.booleans(),
)


def _iso(moment: datetime, timespec: str, sep: str, zulu: bool) -> str:
    text = moment.isoformat(sep=sep, timespec=timespec)
    return text.replace("+00:00", "Z") if zulu else text


host_names = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}", fullmatch=True
)
hosts = (
    host_names
    | st.text(st.characters(categories=["L"]), min_size=1, max_size=10)  # bücher, 例え
    | st.ip_addresses(v=4).map(str)
    | st.ip_addresses(v=6).map(lambda address: f"[{address}]")
)
url_tails = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.characters(categories=["L", "N"]),
    max_size=30,
).map(lambda tail: "/" + tail)
attribution = st.dictionaries(
    st.sampled_from(["utm_source", "utm_medium", "utm_campaign", "comet_source", "comet_type"]),
    st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
    max_size=3,
).map(lambda params: "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
urls = st.builds(
    "{}://{}{}{}{}{}".format,
    st.sampled_from(["http", "https", "HTTPS", "Http"]),
    st.sampled_from(["", "user@", "user:pw@"]),
    hosts,
    st.sampled_from(["", ":", ":8443"]),
    url_tails | st.just(""),
    attribution,
)
number_texts = (
    st.integers().map(str)
    | finite_floats.map(repr)
    | st.decimals(allow_nan=False, allow_infinity=False).map(str)
    | st.from_regex(r"[+-]?([0-9]+\.?|[0-9]*\.[0-9]+)([eE][+-]?[0-9]+)?", fullmatch=True)
)
BOUND = rules.MAX_NUMBER
in_range = st.integers(-BOUND, BOUND) | st.floats(-BOUND, BOUND, allow_nan=False)
out_of_range = (
    st.integers(min_value=BOUND + 1) | st.integers(max_value=-BOUND - 1)
    | st.floats(min_value=BOUND * 1.01, allow_infinity=False)
)
number_texts_in_range = number_texts.filter(lambda text: len(text) <= rules.MAX_NUMBER_TEXT_LENGTH)
not_numbers = st.sampled_from(
    ["", " 5", "5 ", "inf", "-Infinity", "nan", "1,5", "0x1F", "1e", "+", "."]
)

GOOD: Mapping[Kind, st.SearchStrategy[object]] = {
    Kind.EVENT_NAME: st.sampled_from(sorted(STANDARD_EVENTS | CUSTOM)),
    Kind.TEXT: texts(max_size=rules.MAX_TEXT_LENGTH),
    Kind.TOKEN: texts(min_size=1, max_size=rules.MAX_TOKEN_LENGTH),
    Kind.EMAIL: st.builds("{}@{}".format, no_at, no_at),
    Kind.IP: st.ip_addresses().map(str),
    Kind.URL: urls,
    Kind.EVENT_TIME: date_times
    | st.integers(0, rules.MAX_EVENT_TIME_SECONDS)
    | st.floats(0, rules.MAX_EVENT_TIME_SECONDS),
    Kind.NUMBER: in_range,
    Kind.BOOLEAN: st.booleans(),
    Kind.NUMERIC: in_range | number_texts_in_range,
    Kind.DATE: st.dates().map(date.isoformat) | date_times,
    Kind.IDEMPOTENCY_KEY: texts(min_size=1, max_size=rules.MAX_IDEMPOTENCY_KEY_LENGTH),
}

non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
not_iso = letters | st.sampled_from(["2024-13-01T00:00:00", "2024-05-01T25:00", "01/05/2024"])
BAD: Mapping[Kind, st.SearchStrategy[object]] = {
    Kind.EVENT_NAME: other_type()
    | st.sampled_from(sorted(CUSTOM_EVENTS - CUSTOM) + ["custom_event_51", "Purchase", "lead"])
    | st.text().filter(lambda name: name not in STANDARD_EVENTS | CUSTOM),
    Kind.TEXT: other_type("string") | st.just("t" * (rules.MAX_TEXT_LENGTH + 1)),
    Kind.TOKEN: st.just("") | other_type("string") | st.just("t" * (rules.MAX_TOKEN_LENGTH + 1)),
    Kind.EMAIL: other_type("string")
    | no_at
    | st.builds("{}@{}@{}".format, st.text(), st.text(), st.text())
    | no_at.map(lambda text: "@" + text)
    | no_at.map(lambda text: text + "@")
    | no_at.map(lambda text: "x" * rules.MAX_EMAIL_LENGTH + "@" + text),
    Kind.IP: other_type("string")
    | st.text().filter(lambda text: not _is_address(text))
    | st.ip_addresses(v=6).map(lambda address: f"{address}%eth0")
    | st.sampled_from(["256.0.0.1", "1.2.3", "010.0.0.1", "::g"]),
    Kind.URL: other_type("string")
    | urls.map(lambda url: "ftp" + url[url.index(":") :])
    | urls.map(lambda url: url[url.index(":") + 1 :])  # //host/path: no scheme
    | urls.map(lambda url: url + " x")
    | st.sampled_from(["https://", "https:///path", "/checkout", "example.com", "javascript:x"]),
    Kind.EVENT_TIME: other_type("string", "number")
    | not_iso
    | st.dates().map(date.isoformat)
    | st.integers(max_value=-1)
    | st.floats(max_value=-1e-9, allow_infinity=False)
    | st.integers(min_value=rules.MAX_EVENT_TIME_SECONDS + 1)
    | non_finite,
    Kind.NUMBER: other_type("number") | number_texts | non_finite | out_of_range,
    Kind.BOOLEAN: other_type("boolean"),
    Kind.NUMERIC: other_type("number", "string") | letters | not_numbers | non_finite
    | out_of_range | st.just("9" * (rules.MAX_NUMBER_TEXT_LENGTH + 1)),
    Kind.DATE: other_type("string") | not_iso,
    Kind.IDEMPOTENCY_KEY: other_type("string")
    | st.just("")
    | st.text(min_size=rules.MAX_IDEMPOTENCY_KEY_LENGTH + 1),
}


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "%" not in text


unknown_names = st.text(max_size=24).filter(lambda name: name not in FIELDS) | st.builds(
    "profile_field_{}".format, st.text("0123456789", min_size=1, max_size=8)
).filter(lambda name: name not in FIELDS)


CORE = ("event_name", "email", "comet_token", "fingerprint", "ip")  # the rules across fields


@st.composite
def events(draw: st.DrawFn, fields: Mapping[str, Kind] = FIELDS, *, valid: bool = False) -> Drawn:
    """An event of some of `fields` (always a say on those in CORE), each absent, null, good or
    bad, and any unknown fields; with the fields whose own value breaks their rule (the rules
    across fields are `expected`'s). `valid`: a named event of good values only."""
    others = sorted(name for name in fields if name not in CORE)
    names = [name for name in CORE if name in fields]
    names += draw(st.lists(st.sampled_from(others), max_size=8, unique=True))
    choices = ["absent", "null", "good", "good"] + ([] if valid else ["bad"])
    event: dict[str, object] = {}
    bad: set[str] = set()
    for name in names:
        choice = "good" if valid and name == "event_name" else draw(st.sampled_from(choices))
        if choice == "null":
            event[name] = None
        elif choice == "good":
            event[name] = draw(GOOD[fields[name]])
        elif choice == "bad":
            event[name] = draw(BAD[fields[name]])
            bad.add(name)
    if not valid:
        unknown = draw(st.dictionaries(unknown_names, st.none() | json_values, max_size=2))
        event.update(unknown)
        bad |= set(unknown)
    return event, bad


def expected(event: Mapping[str, object], bad: set[str]) -> set[str]:
    """The fields a refusal of `event` must name: the bad ones, and the rules across fields."""
    present = {name for name, value in event.items() if value is not None}
    named = set(bad)
    if "event_name" not in present:
        named.add("event_name")
    fingerprint, ip = "fingerprint" in present, "ip" in present
    if fingerprint and not ip:
        named.add("ip")
    elif ip and not fingerprint:
        named.add("fingerprint")
    elif not (fingerprint or "email" in present or "comet_token" in present):
        named.add("email")
    return named


def assert_well_formed(errors: Mapping[str, list[str]] | None) -> None:
    assert errors, "a refusal lists its problems"
    for name, messages in errors.items():
        assert isinstance(name, str) and messages
        assert all(isinstance(message, str) and message for message in messages)


# --- the rules ------------------------------------------------------------------------------


@fuzz_settings(EXAMPLES)
@given(events())
@example(
    (
        {"event_name": "purchase", "email": "a@b", "profile_field_" + "9" * 5000: 1},
        {"profile_field_" + "9" * 5000},
    )
)
def test_the_rules_name_exactly_the_fields_an_event_breaks(drawn: Drawn) -> None:
    event, bad = drawn
    cleaned, errors = rules.validate(event, CUSTOM)
    assert set(errors) == expected(event, bad)
    if not errors:
        assert cleaned == {name: value for name, value in event.items() if value is not None}
        assert rules.check(event, CUSTOM) == cleaned
        return
    assert_well_formed(errors)
    with pytest.raises(Invalid) as refused:
        rules.check(event, CUSTOM)
    assert refused.value.status == 422 and refused.value.errors == errors


@fuzz_settings(EXAMPLES)
@given(events())
def test_an_event_reads_the_same_from_json(drawn: Drawn) -> None:
    event, _ = drawn
    try:
        raw = json.dumps(event, allow_nan=False).encode()
    except ValueError:  # NaN or infinity: JSON cannot carry them (the parser test refuses them)
        return
    parsed = rules.parse_body(raw)
    assert parsed == event
    assert rules.validate(parsed, CUSTOM)[1] == rules.validate(event, CUSTOM)[1]


# --- parsing --------------------------------------------------------------------------------

json_pieces = st.sampled_from(
    [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"',
        b":",
        b",",
        b" ",
        b"\\",
        b"\\u",
        b"d800",
        b"dc00",
        b"0",
        b"-",
        b".",
        b"e",
        b"1e999",
        b"9" * 5000,
        b"NaN",
        b"Infinity",
        b"true",
        b"null",
        b'"event_name"',
        b'"purchase"',
        b"\xef\xbb\xbf",
        b"\xff",
        b"\xc3",
        b"\x00",
        b"\xe2\x98\x83",
    ]
)
json_texts = json_values.map(lambda value: json.dumps(value, ensure_ascii=False).encode())


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """JSON text with a few bytes cut out or spliced in."""
    raw = bytearray(draw(json_texts))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(raw)))
        if draw(st.booleans()) and at < len(raw):
            del raw[at : at + draw(st.integers(1, 4))]
        else:
            raw[at:at] = draw(json_pieces | st.binary(max_size=3))
    return bytes(raw)


bodies = st.binary(max_size=64) | json_texts | mangled() | st.lists(json_pieces).map(b"".join)


@fuzz_settings(EXAMPLES)
@given(bodies)
@example(b"")
@example(b"[" * 40 + b"]" * 40)
@example(b'{"a": ' + b"9" * 5000 + b"}")
@example(b'{"a": "\\ud800"}')
@example(b'{"a": NaN}')
@example(b'{"profile_field_' + b"9" * 5000 + b'": 1}')
def test_parsing_any_body_raises_only_the_validation_error(raw: bytes) -> None:
    try:
        event = rules.check(rules.parse_body(raw), CUSTOM)
    except Invalid as refused:
        assert refused.status == 422
        assert_well_formed(refused.errors)  # the 422 always has `errors`, as documented
        return
    assert isinstance(event, dict)
    json.dumps(event, ensure_ascii=False, allow_nan=False).encode()  # it can be queued


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b"\xff", b'{"a": NaN}', b"[" * 40 + b"]" * 40])
def test_a_body_refused_as_a_whole_is_listed_under_body(raw: bytes) -> None:
    # Found by schemathesis: the documented 422 has `errors`, these answers had none.
    with pytest.raises(Invalid) as refused:
        rules.parse_body(raw)
    assert refused.value.errors == {rules.BODY: [refused.value.message]}


def test_a_profile_field_of_thousands_of_digits_is_an_unknown_field() -> None:
    # int() of its number raised ValueError (a 500) instead of naming the field.
    name = "profile_field_" + "9" * 5000
    _, errors = rules.validate({"event_name": "purchase", "email": "a@b", name: 1}, CUSTOM)
    assert set(errors) == {name} and "profile_field_30" in errors[name][0]


# --- the browser's batch ----------------------------------------------------------------------

BROWSER_FIELDS = {name: kind for name, kind in FIELDS.items() if name not in RELAY_ONLY}
BROWSER_FIELDS.pop("event_time")  # the relay sets it; what the browser sends is a hint
clients = st.builds(
    Client,
    # what the peer address (or a trusted proxy's X-Forwarded-For) may be, words included
    ip=st.none() | st.ip_addresses().map(str) | st.sampled_from(["unknown", "_hidden", ""]),
    user_agent=st.none() | texts(),  # an HTTP header holds no NUL
    comet_token=texts(min_size=1, max_size=64),  # the relay signs 16 to 64 characters
)


@st.composite
def browser_events(draw: st.DrawFn, *, valid: bool = False) -> Drawn:
    """A browser event (its idempotency key is `event_id`), with relay-only fields forged.
    `valid`: one the relay accepts, whatever the forged fields hold."""
    event, bad = draw(events(BROWSER_FIELDS, valid=valid))
    key_kind = draw(st.sampled_from(["absent", "null", "good"] + ([] if valid else ["bad"])))
    if key_kind == "null":
        event["event_id"] = None
    elif key_kind != "absent":
        event["event_id"] = draw((GOOD if key_kind == "good" else BAD)[Kind.IDEMPOTENCY_KEY])
        if key_kind == "bad":
            bad.add("event_id")
    forged = draw(
        st.dictionaries(st.sampled_from(sorted(RELAY_ONLY | {"event_time"})), json_values)
    )
    event.update(forged)
    return event, bad


@fuzz_settings(EXAMPLES)
@given(browser_events(), clients)
def test_a_browser_event_names_exactly_the_fields_it_breaks(drawn: Drawn, client: Client) -> None:
    sent, bad = drawn
    event, errors = browser_event(sent, client, CUSTOM, NOW)
    address = _address(client.ip)
    named = set(bad)
    if sent.get("event_name") is None:
        named.add("event_name")
    fingerprint = sent.get("fingerprint") is not None
    if fingerprint and address is None:
        named.discard("fingerprint")  # useless without the client's address: dropped
    if len(named) > MAX_LISTED:  # the answer lists a few, and counts the rest
        assert len(errors) == MAX_LISTED + 1 and set(errors) - {rules.BODY} <= named
        return
    assert set(errors) == named
    if errors:
        assert_well_formed(errors)
        return
    assert rules.check(event, CUSTOM) == event  # what is accepted passes the API's rules
    assert event["comet_token"] == client.comet_token
    assert event.get("user_agent") == (client.user_agent or None)
    kept = fingerprint and address is not None
    assert event.get("fingerprint") == (sent["fingerprint"] if kept else None)
    assert (_address(str(event["ip"])) if "ip" in event else None) == (address if kept else None)
    assert event.get("idempotency_key") == sent.get("event_id")
    assert isinstance(event["event_time"], (int, float))


def _address(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `host` names (an IPv4-mapped IPv6 address as IPv4), or None."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def batch_of(items: st.SearchStrategy[object]) -> st.SearchStrategy[bytes]:
    """Bodies `{"e": [...]}` of up to 7 items (the tests allow 5 a batch)."""
    return st.lists(items, max_size=7).map(lambda e: json.dumps({"e": e, "v": 1}).encode())


def event_of(drawn: Drawn) -> dict[str, object]:
    return drawn[0]


def test_a_zoned_client_address_does_not_refuse_the_event() -> None:
    client = Client("fe80::1%eth0", None, "t" * 22)
    _, errors = browser_event({"event_name": "purchase", "fingerprint": "f"}, client, CUSTOM, NOW)
    assert errors == {}


batches = (
    bodies
    | batch_of(json_values)
    | batch_of(browser_events().map(event_of))
    | batch_of(browser_events(valid=True).map(event_of))
)


@fuzz_settings(EXAMPLES)
@given(batches, clients)
@example(b'{"e": ' + b"[" * 40 + b"]" * 40 + b"}", Client(None, None, "t"))
@example(json.dumps({"e": [{}] * 6}).encode(), Client(None, None, "t"))
def test_the_batch_parser_raises_only_422_or_413(raw: bytes, client: Client) -> None:
    try:
        sent = parse_batch(raw, 5)
    except PayloadTooLarge as refused:
        assert refused.status == 413
        return
    except Invalid as refused:
        assert refused.status == 422
        assert_well_formed(refused.errors)
        return
    assert isinstance(sent, list) and len(sent) <= 5
    for item in sent:
        event, errors = browser_event(item, client, CUSTOM, NOW)
        if errors:
            assert_well_formed(errors)
        else:
            assert rules.check(event, CUSTOM) == event
