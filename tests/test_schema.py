"""The contract's validation rules (docs/CONTRACT.md §1), one table row per rule."""

from __future__ import annotations

import json

import pytest

from relay import rules
from relay.errors import Invalid

CUSTOM = frozenset({"custom_event_3", "custom_event_10"})
BASE: dict[str, object] = {"event_name": "purchase", "email": "jane@example.com"}


def with_(**fields: object) -> dict[str, object]:
    """BASE with `fields` added or replaced."""
    return {**BASE, **fields}


FULL: dict[str, object] = {
    "event_name": "purchase",
    "email": "jane@example.com",
    "comet_token": "ct_1",
    "fingerprint": "fp_1",
    "ip": "203.0.113.7",
    "tracking_id": "t-1",
    "full_name": "Jane Doe",
    "first_name": "Jane",
    "last_name": "Doe",
    "phone": "+1 555 0100",
    "user_agent": "Mozilla/5.0",
    "event_time": "2024-05-01T12:30:00Z",
    "url": "https://shop.example.com/checkout?step=2#pay",
    "amount": 49.99,
    "order_id": "1001",
    "order_name": "#1001",
    "checkout_token": "ck_1",
    "is_upsell": False,
    "upsell_common_id": "up-1",
    "comet_source": "google",
    "comet_network": "search",
    "comet_campaign": "spring",
    "comet_ad_group": "shoes",
    "comet_ad_id": "ad-9",
    "comet_keyword": "red shoes",
    "comet_type": "cpc",
    **{f"profile_field_{n}": f"text {n}" for n in range(1, 16)},
    **{f"profile_field_{n}": n * 10 for n in range(16, 21)},
    **{f"profile_field_{n}": str(n * 10) for n in range(21, 26)},
    **{f"profile_field_{n}": "2024-05-01" for n in range(26, 29)},
    "profile_field_29": "2024-05-01T12:30:00+02:00",
    "profile_field_30": "2024-05-01T12:30:00Z",
    "idempotency_key": "evt-1",
    "do_not_capi": True,
}

GOOD: list[tuple[str, dict[str, object]]] = [
    ("every field", FULL),
    ("identified by email", {"event_name": "lead_generated", "email": "a@b"}),
    ("identified by comet_token", {"event_name": "lead_generated", "comet_token": "ct"}),
    ("fingerprint with ipv4", {"event_name": "contact", "fingerprint": "fp", "ip": "10.0.0.1"}),
    ("fingerprint with ipv6", {"event_name": "contact", "fingerprint": "fp", "ip": "2001:db8::1"}),
    ("configured custom event", with_(event_name="custom_event_3")),
    ("another configured custom event", with_(event_name="custom_event_10")),
    ("nulls count as absent", {**{name: None for name in rules.FIELDS}, **BASE}),
    ("null fingerprint and ip", with_(fingerprint=None, ip=None)),
    ("event_time ISO with Z", with_(event_time="2024-05-01T12:30:00Z")),
    ("event_time ISO with offset", with_(event_time="2024-05-01T12:30:00.123456-05:00")),
    ("event_time ISO without seconds", with_(event_time="2024-05-01T12:30")),
    ("event_time ISO with a space", with_(event_time="2024-05-01 12:30:00")),
    ("event_time ISO lower case", with_(event_time="2024-05-01t12:30:00z")),
    ("event_time seconds", with_(event_time=1_714_566_600)),
    ("event_time fractional seconds", with_(event_time=1_714_566_600.25)),
    ("event_time zero", with_(event_time=0)),
    ("event_time at the seconds bound", with_(event_time=rules.MAX_EVENT_TIME_SECONDS)),
    ("url http", with_(url="http://example.com")),
    ("url upper-case scheme", with_(url="HTTPS://example.com/")),
    ("url with port and user", with_(url="https://u:p@example.com:8443/a%20b")),
    ("url with ipv6 host", with_(url="http://[2001:db8::1]:8080/x")),
    ("url with unicode host", with_(url="https://bücher.example/ü?q=ä")),
    ("amount integer", with_(amount=49)),
    ("amount zero", with_(amount=0)),
    ("amount negative", with_(amount=-5.5)),
    ("amount at the bound", with_(amount=10**15)),
    ("amount negative at the bound", with_(amount=-(10**15))),
    ("is_upsell true", with_(is_upsell=True)),
    ("do_not_capi false", with_(do_not_capi=False)),
    ("profile text", with_(profile_field_1="", profile_field_15="x")),
    ("profile number", with_(profile_field_16=500, profile_field_25=-1.5)),
    ("profile number text", with_(profile_field_16="500", profile_field_17="-1.5")),
    ("profile number text exponent", with_(profile_field_18="2e3", profile_field_19=".5")),
    ("profile number text long", with_(profile_field_20="9" * 15, profile_field_21="+1.")),
    ("profile date", with_(profile_field_26="2024-05-01", profile_field_30="2024-05-01T12:30")),
    ("email at the length limit", with_(email="a" * 240 + "@example.com")),
    ("idempotency_key at the length limit", with_(idempotency_key="k" * 255)),
    ("empty text fields", with_(full_name="", order_id="", comet_source="")),
]

STANDARD = sorted(rules.STANDARD_EVENTS)


@pytest.mark.parametrize(("label", "event"), GOOD, ids=[label for label, _ in GOOD])
def test_good_events_are_accepted_unchanged(label: str, event: dict[str, object]) -> None:
    cleaned, errors = rules.validate(event, CUSTOM)
    assert errors == {}
    assert cleaned == {name: value for name, value in event.items() if value is not None}
    assert rules.check(event, CUSTOM) == cleaned


@pytest.mark.parametrize("name", STANDARD)
def test_every_standard_event_is_accepted(name: str) -> None:
    assert rules.check({"event_name": name, "comet_token": "ct"}, frozenset()) == {
        "event_name": name,
        "comet_token": "ct",
    }


def test_the_tables_match_the_contract() -> None:
    assert len(rules.STANDARD_EVENTS) == 14
    assert rules.PAGE_VIEW_EVENT in rules.STANDARD_EVENTS
    assert len(rules.FIELDS) == 26 + 30 + 2
    kinds = rules.Kind
    assert {rules.FIELDS[f"profile_field_{n}"] for n in range(1, 16)} == {kinds.TEXT}
    assert {rules.FIELDS[f"profile_field_{n}"] for n in range(16, 26)} == {kinds.NUMERIC}
    assert {rules.FIELDS[f"profile_field_{n}"] for n in range(26, 31)} == {kinds.DATE}


def test_the_cleaned_event_is_what_was_sent_without_nulls() -> None:
    cleaned, errors = rules.validate(with_(zzz=1, yyy=None, amount=None, phone="1"), CUSTOM)
    assert cleaned == with_(zzz=1, phone="1")
    assert set(errors) == {"zzz", "yyy"}


def test_values_are_not_normalised() -> None:
    event = with_(email=" Jane@Example.COM", amount=49, event_time="2024-05-01T12:30:00Z")
    cleaned = rules.check(event, frozenset())
    assert cleaned == event
    assert cleaned is not event


BAD: list[tuple[str, dict[str, object], str, str]] = [
    # label, event, the field named in errors, a part of its message
    ("event_name missing", {"email": "a@b"}, "event_name", "is required"),
    ("event_name null", {"event_name": None, "email": "a@b"}, "event_name", "is required"),
    ("event_name not a string", with_(event_name=7), "event_name", "got a number"),
    ("event_name unknown", with_(event_name="bought"), "event_name", "not an event"),
    ("event_name camel case", with_(event_name="AddToCart"), "event_name", "'add_to_cart'"),
    ("event_name Meta name", with_(event_name="Lead"), "event_name", "'lead_generated'"),
    (
        "custom event not configured",
        with_(event_name="custom_event_4"),
        "event_name",
        "not configured for this Space (its custom events: custom_event_3, custom_event_10)",
    ),
    ("custom event out of range", with_(event_name="custom_event_51"), "event_name", "1 to"),
    ("custom event zero", with_(event_name="custom_event_0"), "event_name", "custom_event_50"),
    ("no identification", {"event_name": "purchase"}, "email", "comet_token"),
    ("no identification but nulls", with_(email=None), "email", "fingerprint together with ip"),
    ("fingerprint without ip", {"event_name": "contact", "fingerprint": "fp"}, "ip", "together"),
    ("ip without fingerprint", with_(ip="10.0.0.1"), "fingerprint", "together with ip"),
    ("ip null with fingerprint", with_(fingerprint="fp", ip=None), "ip", "required"),
    ("ip not an address", with_(fingerprint="fp", ip="10.0.0.256"), "ip", "not an IP address"),
    ("ip with a zone", with_(fingerprint="fp", ip="fe80::1%eth0"), "ip", "not an IP address"),
    ("ip leading zeros", with_(fingerprint="fp", ip="010.0.0.1"), "ip", "IPv4 or IPv6"),
    ("ip not a string", with_(fingerprint="fp", ip=167772161), "ip", "got a number"),
    ("fingerprint empty", with_(fingerprint="", ip="10.0.0.1"), "fingerprint", "not be empty"),
    ("comet_token empty", with_(comet_token=""), "comet_token", "not be empty"),
    ("comet_token not a string", with_(comet_token=5), "comet_token", "must be a string"),
    ("email without @", with_(email="jane.example.com"), "email", "exactly one '@'"),
    ("email with two @", with_(email="a@b@c"), "email", "exactly one '@'"),
    ("email empty local part", with_(email="@example.com"), "email", "not an email address"),
    ("email empty domain", with_(email="jane@"), "email", "not an email address"),
    ("email too long", with_(email="a" * 243 + "@example.com"), "email", "at most 254"),
    ("email not a string", with_(email=["a@b"]), "email", "got an array"),
    ("event_time milliseconds", with_(event_time=1_714_566_600_000), "event_time", "divide it"),
    ("event_time negative", with_(event_time=-1), "event_time", "not be negative"),
    ("event_time not ISO", with_(event_time="yesterday"), "event_time", "not an ISO 8601"),
    ("event_time bad month", with_(event_time="2024-13-01T00:00:00Z"), "event_time", "ISO 8601"),
    ("event_time date only", with_(event_time="2024-05-01"), "event_time", "without a time"),
    ("event_time boolean", with_(event_time=True), "event_time", "got a boolean"),
    ("event_time object", with_(event_time={"s": 1}), "event_time", "got an object"),
    ("event_time infinite", with_(event_time=float("inf")), "event_time", "finite"),
    ("url relative", with_(url="/checkout"), "url", "absolute http(s) URL"),
    ("url other scheme", with_(url="ftp://example.com/"), "url", "absolute http(s) URL"),
    ("url without host", with_(url="https:///path"), "url", "scheme and host"),
    ("url with a space", with_(url="https://example.com/a b"), "url", "without spaces"),
    ("url not a string", with_(url=1), "url", "got a number"),
    ("amount string", with_(amount="49.99"), "amount", "without the quotes"),
    ("amount huge integer", with_(amount=10**4000 // 10**100), "amount", "out of range"),
    ("amount beyond the bound", with_(amount=-1e16), "amount", "at most 10^15"),
    ("profile number text huge", with_(profile_field_20="9" * 400), "profile_field_20", "not a number"),
    ("profile number beyond the bound", with_(profile_field_21=2e15), "profile_field_21", "out of range"),
    ("text too long", with_(phone="1" * 2049), "phone", "at most 2048"),
    ("url too long", with_(url="https://shop.example/" + "p" * 2030), "url", "at most 2048"),
    ("token too long", with_(fingerprint="f" * 256, ip="1.2.3.4"), "fingerprint", "at most 255"),
    ("amount text", with_(amount="free"), "amount", "got a string"),
    ("amount boolean", with_(amount=True), "amount", "got a boolean"),
    ("amount NaN", with_(amount=float("nan")), "amount", "finite"),
    ("amount infinite", with_(amount=float("-inf")), "amount", "finite"),
    ("is_upsell string", with_(is_upsell="true"), "is_upsell", "without quotes"),
    ("is_upsell number", with_(is_upsell=1), "is_upsell", "got a number"),
    ("do_not_capi string", with_(do_not_capi="yes"), "do_not_capi", "got a string"),
    ("profile text number", with_(profile_field_1=5), "profile_field_1", "must be a string"),
    ("profile number word", with_(profile_field_16="abc"), "profile_field_16", "not a number"),
    ("profile number spaces", with_(profile_field_20=" 5"), "profile_field_20", "not a number"),
    ("profile number inf", with_(profile_field_22="inf"), "profile_field_22", "like 500"),
    ("profile number bool", with_(profile_field_25=False), "profile_field_25", "got a boolean"),
    ("profile number nan", with_(profile_field_21=float("nan")), "profile_field_21", "finite"),
    ("profile date bad", with_(profile_field_26="01/05/2024"), "profile_field_26", "ISO 8601"),
    ("profile date number", with_(profile_field_30=20240501), "profile_field_30", "got a number"),
    ("text field number", with_(order_id=1001), "order_id", "must be a string, got a number"),
    ("text field object", with_(full_name={"a": 1}), "full_name", "got an object"),
    ("idempotency_key empty", with_(idempotency_key=""), "idempotency_key", "not be empty"),
    ("idempotency_key long", with_(idempotency_key="k" * 256), "idempotency_key", "at most 255"),
    ("idempotency_key number", with_(idempotency_key=7), "idempotency_key", "got a number"),
    ("unknown value", with_(value=49), "value", "did you mean 'amount'?"),
    ("unknown revenue", with_(revenue=49), "revenue", "'amount'"),
    ("unknown event", with_(event="x"), "event", "'event_name'"),
    ("unknown name", with_(name="x"), "name", "'event_name' or 'full_name'"),
    ("unknown timestamp", with_(timestamp=1), "timestamp", "'event_time'"),
    ("unknown event_id", with_(event_id="x"), "event_id", "'idempotency_key'"),
    ("unknown ip_address", with_(ip_address="x"), "ip_address", "'ip'"),
    ("unknown ua", with_(ua="x"), "ua", "'user_agent'"),
    ("unknown utm_source", with_(utm_source="g"), "utm_source", "'comet_source'"),
    ("unknown utm_medium", with_(utm_medium="cpc"), "utm_medium", "'comet_type'"),
    ("unknown utm_content", with_(utm_content="c"), "utm_content", "'comet_ad_id'"),
    ("typo emial", with_(emial="a@b"), "emial", "did you mean 'email'?"),
    ("typo ammount", with_(ammount=1), "ammount", "'amount'"),
    ("camel case field", with_(eventTime=1), "eventTime", "'event_time'"),
    ("upper case field", with_(Email="a@b"), "Email", "'email'"),
    ("profile field 31", with_(profile_field_31="x"), "profile_field_31", "profile_field_30"),
    ("profile field 0", with_(profile_field_0="x"), "profile_field_0", "profile_field_1 to"),
    ("unknown null field", with_(currency=None), "currency", "not a field"),
    ("unknown field, no guess", with_(zzz=1), "zzz", "not a field of the Create Event API"),
]


@pytest.mark.parametrize(("label", "event", "field", "part"), BAD, ids=[label for label, *_ in BAD])
def test_bad_events_name_the_field_and_the_fix(
    label: str, event: dict[str, object], field: str, part: str
) -> None:
    _, errors = rules.validate(event, CUSTOM)
    assert field in errors, errors
    assert part in " ".join(errors[field])
    with pytest.raises(Invalid) as caught:
        rules.check(event, CUSTOM)
    assert caught.value.status == 422
    assert caught.value.errors == errors
    assert f"{field}: " in caught.value.message


def test_every_problem_is_listed_at_once() -> None:
    event = {
        "event_name": "bought",
        "fingerprint": "fp",
        "amount": "49",
        "value": 49,
        "event_time": 1_714_566_600_000,
        "url": "nope",
    }
    with pytest.raises(Invalid) as caught:
        rules.check(event, frozenset())
    errors = caught.value.errors
    assert errors is not None
    assert set(errors) == {"event_name", "ip", "amount", "value", "event_time", "url"}
    assert all(len(messages) == 1 for messages in errors.values())
    assert caught.value.message.startswith("The event is invalid: 6 problems. event_name: ")
    assert "milliseconds" in caught.value.message


def test_an_empty_object_needs_a_name_and_an_identification() -> None:
    _, errors = rules.validate({}, frozenset())
    assert set(errors) == {"event_name", "email"}
    message = errors["email"][0]
    assert all(option in message for option in ("email", "comet_token", "fingerprint", "ip"))


def test_one_problem_is_singular_and_many_are_summarised() -> None:
    with pytest.raises(Invalid) as one:
        rules.check(with_(amount="x"), frozenset())
    assert one.value.message.startswith("The event is invalid: 1 problem. amount: ")
    many = with_(**{f"unknown_{n}": n for n in range(30)})
    with pytest.raises(Invalid) as caught:
        rules.check(many, frozenset())
    assert caught.value.errors is not None and len(caught.value.errors) == 30
    assert caught.value.message.endswith("and 20 more (see errors)")


def test_no_custom_event_configured_says_so() -> None:
    _, errors = rules.validate(with_(event_name="custom_event_3"), frozenset())
    assert "its custom events: none" in errors["event_name"][0]


def test_a_configured_name_outside_the_custom_range_is_not_an_event() -> None:
    _, errors = rules.validate(with_(event_name="bought"), frozenset({"bought"}))
    assert "event_name" in errors


def test_an_unknown_long_field_name_is_clipped_in_the_message() -> None:
    name = "x" * 5000
    _, errors = rules.validate(with_(**{name: 1}), frozenset())
    assert len(errors[name][0]) < 300


# parse_body


def test_parse_body_reads_one_object() -> None:
    raw = json.dumps(FULL).encode()
    assert rules.parse_body(raw) == FULL
    assert rules.parse_body(b"\xef\xbb\xbf" + raw) == FULL  # a UTF-8 byte order mark
    assert rules.parse_body('{"full_name": "Zoë \\ud83d\\ude00"}'.encode()) == {
        "full_name": "Zoë \U0001f600"
    }


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "empty"),
    ("blank", b" \n\t", "empty"),
    ("not JSON", b"event_name=purchase", "not valid JSON"),
    ("truncated", b'{"event_name": "purchase"', "line 1 column"),
    ("trailing comma", b'{"a": 1,}', "not valid JSON"),
    ("array", b'[{"event_name": "purchase"}]', "one event per request"),
    ("string", b'"purchase"', "got a string"),
    ("number", b"42", "got a number"),
    ("null", b"null", "got null"),
    ("invalid UTF-8", b'{"full_name": "\xff"}', "not valid UTF-8"),
    ("UTF-16", '{"a": 1}'.encode("utf-16"), "UTF-8"),
    ("NaN", b'{"amount": NaN}', "NaN"),
    ("Infinity", b'{"amount": Infinity}', "Infinity"),
    ("minus Infinity", b'{"amount": -Infinity}', "-Infinity"),
    ("huge integer", b'{"amount": ' + b"9" * 5000 + b"}", "thousands of digits"),
    ("deep nesting", b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested more than 32"),
    ("very deep nesting", b"[" * 100_000 + b"]" * 100_000, "nested more than 32"),
    ("very deep objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested more than 32"),
    ("repeated key", b'{"amount": 1, "amount": 2}', "more than once"),
    ("repeated key, spaced", b'{"amount" : 1,"amount"\t:2}', "more than once"),
    ("repeated nested key", b'{"a": [{"b": 1, "b": 2}]}', "more than once"),
    ("repeated key, escaped quote", b'{"u": "x\\":", "a": 1, "a": 2}', "more than once"),
    ("lone surrogate", b'{"full_name": "\\ud800"}', "surrogate"),
]


@pytest.mark.parametrize(("label", "raw", "part"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_parse_body_refuses_with_invalid(label: str, raw: bytes, part: str) -> None:
    with pytest.raises(Invalid) as caught:
        rules.parse_body(raw)
    assert caught.value.status == 422
    assert part in caught.value.message


@pytest.mark.parametrize(
    "raw",
    [b'\xef\xbb\xbf{"a": 1}', b'{"u": "https://x.example/?q=\\":"}', b'{"a" :{"b": [1, {"c": 2}]}}'],
)
def test_parse_json_reads_as_the_standard_library_does(raw: bytes) -> None:
    assert rules.parse_json(raw) == json.loads(raw.decode("utf-8-sig"))


@pytest.mark.parametrize(
    "amount", [19.99, 1e-05, 1e15, 1e16, -2.5e-7, 0.0001, -0.0, 123456789.123, 10**15, True]
)
def test_a_payload_is_the_standard_librarys_compact_json(amount: object) -> None:
    from relay.rules.events import encode_payload

    event = {"event_name": "purchase", "amount": amount, "full_name": "Zoë \u2028 \x7f 😀"}
    expected = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    assert encode_payload(event) == expected


def test_a_repeated_key_is_named_in_errors() -> None:
    with pytest.raises(Invalid) as caught:
        rules.parse_body(b'{"email": "a@b", "amount": 1, "email": "c@d"}')
    assert caught.value.errors == {"email": ["is sent more than once: send it once."]}


def test_nesting_up_to_the_limit_parses() -> None:
    depth = rules.MAX_DEPTH - 1  # the root object is the first level
    raw = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    assert rules.parse_body(raw) == json.loads(raw)


def test_parse_body_raises_only_invalid_on_any_bytes() -> None:
    samples = [bytes([n]) for n in range(256)]
    samples += [b'{"a": ' + bytes([n]) + b"}" for n in range(256)]
    samples += [b'{"a": "\\u' + hex_ + b'"}' for hex_ in (b"d800", b"DFFF", b"zzzz", b"12")]
    samples += [b"1e999", b'{"a": 1e999}', b"-", b"{" * 50, b'{"": {"": {}}}']
    for raw in samples:
        try:
            result = rules.parse_body(raw)
        except Invalid:
            continue
        assert isinstance(result, dict), raw


def test_a_nul_in_a_text_field_is_refused_naming_the_field() -> None:
    event = rules.parse_body(b'{"event_name": "purchase", "email": "a@b.co", "order_id": "x\\u0000y"}')
    _, errors = rules.validate(event, frozenset())
    assert list(errors) == ["order_id"] and "NUL" in errors["order_id"][0]
    kept = rules.parse_body(b'{"event_name": "purchase", "order_id": "x\\\\u0000y"}')
    assert kept["order_id"] == "x\\u0000y"  # an escaped backslash, then the text u0000


def test_only_the_first_unknown_fields_get_a_did_you_mean() -> None:
    event = {"event_name": "purchase", "emial": "a@b.co", **{f"amout{i}": 1 for i in range(6)}}
    _, errors = rules.validate(event, frozenset())
    assert "did you mean 'email'" in errors["emial"][0]
    hinted = [name for name in errors if "did you mean" in errors[name][0]]
    assert len(hinted) == rules.MAX_HINTS
    assert set(errors) >= {"emial", *(f"amout{i}" for i in range(6))}  # all still named


def test_an_answer_lists_at_most_50_fields_however_many_are_wrong() -> None:
    event = with_(**{f"bogus_{n:05d}": n for n in range(3000)})
    _, errors = rules.validate(event, CUSTOM)
    assert len(errors) == 51 and "and 2950 more fields" in errors[rules.BODY][0]
    with pytest.raises(Invalid) as refused:
        rules.check(event, CUSTOM)
    body = json.dumps(refused.value.body())
    assert len(body) < 16_000  # the body sent is about 60 KB
