"""Showing a string someone else chose (an event id, a field name, an upstream's message) in a
log line or a terminal, safely.

Such a string may hold a newline (a fake log line after it), ESC or OSC sequences (commands
to the terminal that shows the log), bidirectional overrides (text that reads otherwise
than it is) or sixty kilobytes. `shown` escapes every control and format character and cuts
the rest to a bound, in the text log, the JSON log and the CLI's tables alike.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit, urlunsplit

MOST = 200  # characters of one such string in a log line


def shown(text: object, most: int = MOST) -> str:
    """`text` (as str) with control and format characters escaped (`\\n`, `\\x1b`,
    `\\u202e`), cut to `most` characters with a note of how many were left out."""
    value = "" if text is None else str(text)
    cut = len(value) > most
    head = value[:most]
    if head.isprintable() and not cut:
        return head  # the usual case: nothing to escape
    escaped = "".join(_escape(c) for c in head)
    return f"{escaped}…(+{len(value) - most} chars)" if cut else escaped


def _escape(char: str) -> str:
    if char.isprintable() and unicodedata.category(char) != "Cf":
        return char
    if char == "\n":
        return "\\n"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def redacted(url: str) -> str:
    """`url` with the password of its user info (redis://:secret@host, https://u:p@host)
    replaced by `***`, to be logged or printed; anything that is no such URL as it is."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return shown(url)
    if not password:
        return shown(url)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return shown(urlunsplit(parts._replace(netloc=f"{user}:***@{host}")))
