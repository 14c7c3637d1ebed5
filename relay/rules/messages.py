"""How the rules' messages show what the sender sent: clipped, and named by JSON type."""

from __future__ import annotations

_JSON_TYPES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def json_type(value: object) -> str:
    """'a string', 'an array', ...: the JSON type of a decoded value, for a message."""
    return _JSON_TYPES.get(type(value), f"a {type(value).__name__}")


def wrong_type(expected: str, value: object) -> str:
    """The message for a value of the wrong type."""
    return f"must be {expected}, got {json_type(value)}."


def clip(text: str, most: int = 80) -> str:
    """`text`, cut to `most` characters with an ellipsis, to quote it in a message."""
    return text if len(text) <= most else text[: most - 1] + "…"
