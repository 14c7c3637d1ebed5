"""Visitor tokens: signed ids that survive key rotation and expire 400 days after the last visit."""

from __future__ import annotations

import re

from itsdangerous import URLSafeTimedSerializer

from relay.auth.visitor import MAX_AGE_SECONDS, SALT, VisitorTokens, cookie_header, new_visitor_id

OLD = "old-secret-key-0123456789abcdef"
NEW = "new-secret-key-0123456789abcdef"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_token_carries_its_visitor_id() -> None:
    tokens = VisitorTokens([NEW], clock=Clock())
    visitor = new_visitor_id()
    token = tokens.issue(visitor)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)  # goes into a cookie without quoting
    assert tokens.verify(token) == visitor


def test_visitor_ids_are_random_and_cookie_safe() -> None:
    ids = {new_visitor_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


def test_a_missing_or_garbage_token_is_not_a_visitor() -> None:
    tokens = VisitorTokens([NEW], clock=Clock())
    for token in (None, "", "garbage", "a.b.c", "x" * 4000):
        assert tokens.verify(token) is None


def test_a_tampered_token_is_refused() -> None:
    tokens = VisitorTokens([NEW], clock=Clock())
    token = tokens.issue(new_visitor_id())
    rest = token.partition(".")[2]
    other = tokens.issue(new_visitor_id()).partition(".")[0]
    assert tokens.verify(f"{other}.{rest}") is None  # another id under this signature
    # The first character of the signature (the last one may only hold base64 padding bits).
    at = token.rindex(".") + 1
    flipped = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    assert tokens.verify(flipped) is None


def test_a_token_signed_with_a_foreign_key_or_salt_is_refused() -> None:
    clock = Clock()
    tokens = VisitorTokens([NEW], clock=clock)
    forged = VisitorTokens(["attacker-key-0123456789abcdef"], clock=clock).issue("a" * 22)
    assert tokens.verify(forged) is None
    other_salt = URLSafeTimedSerializer(NEW, salt="something-else").dumps("a" * 22)
    assert tokens.verify(other_salt) is None


def test_a_signed_value_that_is_not_a_visitor_id_is_refused() -> None:
    # Our own key and salt, but a payload the relay never issues.
    for payload in ({"id": "a" * 22}, 12345, "short", "a" * 65, "has space in it xxxxxxx"):
        token = URLSafeTimedSerializer(NEW, salt=SALT).dumps(payload)
        assert VisitorTokens([NEW]).verify(token) is None, payload


def test_a_token_expires_400_days_after_it_was_signed() -> None:
    clock = Clock()
    tokens = VisitorTokens([NEW], clock=clock)
    visitor = new_visitor_id()
    token = tokens.issue(visitor)
    clock.t = T0 + MAX_AGE_SECONDS
    assert tokens.verify(token) == visitor
    clock.t = T0 + MAX_AGE_SECONDS + 1
    assert tokens.verify(token) is None
    assert MAX_AGE_SECONDS == 400 * 86400


def test_a_token_signed_in_the_future_is_refused() -> None:
    clock = Clock()
    tokens = VisitorTokens([NEW], clock=clock)
    token = tokens.issue(new_visitor_id())
    clock.t = T0 - 10
    assert tokens.verify(token) is None


def test_each_visit_resigns_so_the_token_lives_400_days_from_the_last_visit() -> None:
    clock = Clock()
    tokens = VisitorTokens([NEW], clock=clock)
    first = tokens.visit(None)
    assert first.new
    clock.t = T0 + 300 * 86400
    second = tokens.visit(first.cookie)
    assert (second.visitor_id, second.new) == (first.visitor_id, False)
    assert second.cookie != first.cookie
    clock.t = T0 + 600 * 86400  # 600 days after the first visit, 300 after the second
    assert tokens.verify(first.cookie) is None
    assert tokens.visit(second.cookie).visitor_id == first.visitor_id


def test_an_invalid_token_gets_a_new_visitor() -> None:
    ids = iter(["n" * 22, "m" * 22])
    tokens = VisitorTokens([NEW], clock=Clock(), new_id=lambda: next(ids))
    visit = tokens.visit("forged.token.value")
    assert (visit.visitor_id, visit.new) == ("n" * 22, True)
    assert tokens.verify(visit.cookie) == "n" * 22
    assert tokens.visit(None).visitor_id == "m" * 22


def test_rotation_keeps_old_tokens_and_resigns_them_with_the_newest_key() -> None:
    clock = Clock()
    before = VisitorTokens([OLD], clock=clock)
    old_cookie = before.issue("v" * 22)

    rotated = VisitorTokens([OLD, NEW], clock=clock)  # newest last
    visit = rotated.visit(old_cookie)
    assert (visit.visitor_id, visit.new) == ("v" * 22, False)
    # The refreshed cookie is signed with NEW: it holds once OLD is retired.
    only_new = VisitorTokens([NEW], clock=clock)
    assert only_new.verify(visit.cookie) == "v" * 22
    assert only_new.verify(old_cookie) is None


def test_cookie_header_attributes() -> None:
    plain = cookie_header("_comet", "abc.def", secure=False, domain=None)
    assert plain == "_comet=abc.def; Max-Age=34560000; Path=/; HttpOnly; SameSite=Lax"
    full = cookie_header("_c", "v", secure=True, domain="shop.example", max_age=60)
    assert full == "_c=v; Max-Age=60; Path=/; HttpOnly; SameSite=Lax; Domain=shop.example; Secure"
