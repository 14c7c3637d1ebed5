"""Request bytes to JSON, refusing what is not plainly one JSON document.

Every refusal is `Invalid` (422) with `errors`, as the contract's 422 answer has: a problem
of the body as a whole is listed under `BODY`. Decisions where the contract is silent:
- a key sent twice in one object is refused: the relay and the upstream must not read
  different values from the same body;
- a UTF-8 byte order mark before the JSON is tolerated.

Decoding is msgspec's (a fraction of the standard library's cost with a pairs hook, on the
relay's hot path); the standard library's decoder, with the hooks that refuse what is not
plainly JSON, runs whenever msgspec refuses the body or the body may repeat a key, so every
refusal and its message are as they always were.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable

import msgspec

from relay.errors import Invalid
from relay.rules.fields import BODY, MAX_DEPTH
from relay.rules.messages import clip, json_type


def parse_body(raw: bytes) -> dict[str, object]:
    """The request body as one JSON object; raises `Invalid` (422), and only that, otherwise.

    Refused: what `parse_json` refuses, and any JSON value that is not an object.
    """
    data = parse_json(raw)
    if not isinstance(data, dict):
        hint = " Send one event per request." if isinstance(data, list) else ""
        raise _bad_body(
            "The body must be one JSON object with every field at its root, "
            f"got {json_type(data)}.{hint}"
        )
    return data


def parse_json(raw: bytes) -> object:
    """The request body as a JSON value; raises `Invalid` (422), and only that, otherwise.

    Refused: invalid UTF-8, text that is not JSON, NaN and Infinity, integers too long to
    convert, a key repeated in one object, nesting deeper than `MAX_DEPTH`, and escapes of
    lone UTF-16 surrogates.
    """
    data = _quick(raw)
    if data is not _SLOW:
        return data
    return _parse_json(raw)


_SLOW = object()
_BOM = b"\xef\xbb\xbf"
# A key's closing quote, then its colon. Every key of a body ends so; a string value holds
# such a run only where it has an escaped quote before a colon. So their count bounds the
# keys of the text from above, and a decoded value with as many keys repeated none.
_KEY_END = re.compile(rb'"[ \t\n\r]*:')
_QUOTE_SPACE = re.compile(rb'"[ \t\n\r]')


def _quick(raw: bytes) -> object:
    """msgspec's reading of a plain body, or `_SLOW` when the standard library's decoder must
    judge it (msgspec refuses it, it may repeat a key, it is deep, it escapes a surrogate)."""
    if raw.startswith(_BOM):
        raw = raw[3:]
    # (bytes.find of one byte is a memchr; `in` and longer needles cost several times more)
    if raw.find(b"\\") >= 0 and (raw.find(b"\\ud") >= 0 or raw.find(b"\\uD") >= 0):
        return _SLOW
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return _SLOW
    objects, lists = raw.count(b"{"), raw.count(b"[")
    if objects + lists > MAX_DEPTH and _deeper_than(data, MAX_DEPTH):
        return _SLOW
    # One brace and no bracket (an event): no object but the root, so its keys are len(data).
    flat = objects == 1 and not lists
    keys = len(data) if flat and isinstance(data, dict) else _count_keys(data)
    # Without a quote before white space, every such run is '":' (counted faster).
    spaced = _QUOTE_SPACE.search(raw) is not None
    if keys != (len(_KEY_END.findall(raw)) if spaced else raw.count(b'":')):
        return _SLOW
    return data


def _count_keys(data: object) -> int:
    """The keys of every object in a decoded JSON value (at most MAX_DEPTH deep here)."""
    if isinstance(data, dict):
        n = len(data)
        values: Iterable[object] = data.values()
    elif isinstance(data, list):
        n, values = 0, data
    else:
        return 0
    for value in values:
        if isinstance(value, (dict, list)):
            n += _count_keys(value)
    return n


def _parse_json(raw: bytes) -> object:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad_body(
            f"The body is not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}): "
            "send the JSON encoded as UTF-8."
        ) from None
    if not text or text.isspace():
        raise _bad_body("The body is empty: send the event as one JSON object.")
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _bad_body(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from None
    except _Refused as exc:
        raise Invalid(str(exc), errors=exc.errors or {BODY: [str(exc)]}) from None
    except RecursionError:
        raise _bad_body(_TOO_DEEP) from None
    except ValueError:  # int() refuses a literal of more digits than sys.get_int_max_str_digits()
        raise _bad_body(
            "The body holds an integer with thousands of digits: send numbers of a sane size."
        ) from None
    # Nesting needs brackets: a body with few of them (every event) skips the walk.
    if text.count("{") + text.count("[") > MAX_DEPTH and _deeper_than(data, MAX_DEPTH):
        raise _bad_body(_TOO_DEEP)
    # A lone surrogate can only come from a \uD8xx-style escape, so only such bodies pay for
    # the check; left in, it would fail later when the event is encoded for the outbox.
    if "\\ud" in text or "\\uD" in text:
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _bad_body(
                "The body holds a \\u escape of a lone UTF-16 surrogate, which is not text: "
                "escape a character beyond U+FFFF as a surrogate pair."
            ) from None
    return data


def _bad_body(message: str) -> Invalid:
    """422 for the body as a whole: `errors` names `BODY`, as the contract's 422 has `errors`."""
    return Invalid(message, errors={BODY: [message]})


def _deeper_than(data: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children: Iterable[object] = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


_TOO_DEEP = (
    f"The body is nested more than {MAX_DEPTH} levels deep: an event is one flat JSON "
    "object, every field at its root."
)


class _Refused(ValueError):
    """Raised from inside json.loads to stop it; becomes `Invalid`."""

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors


def _refuse_constant(name: str) -> object:
    raise _Refused(f"The body holds {name}, which is not JSON: send a finite number, or null.")


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    data = dict(pairs)
    if len(data) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        repeated = [key for key, count in counts.items() if count > 1]
        names = ", ".join(clip(key, 40) for key in repeated)
        raise _Refused(
            f"The body sends a key more than once in one object ({names}): send each once.",
            {key: ["is sent more than once: send it once."] for key in repeated},
        )
    return data


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_object)
