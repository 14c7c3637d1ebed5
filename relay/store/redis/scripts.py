"""The outbox's Lua scripts, read from lua/ (package data, so an installed wheel has them).

Each per-Space script is lua/prelude.lua, then lua/layout.lua (which upgrades a Space's data
written by an older relay, the first time any script touches it), then its own file, and gets
the Space's keys, SPACE_KEYS in this order, as KEYS: the prelude names them K_SEQ, K_EV, ... by
position.
Constants the scripts alone read (LOG_SECONDS, EXACT_SECONDS, import.lua's FIELDS) are
defined in the Lua, once; what Python also needs (CHUNK, PROMOTE, ...) is passed as ARGV.
"""

from __future__ import annotations

from relay.redis_link import Script, lua_source

SPACE_KEYS = (
    "seq", "ev", "ready:0", "ready:1", "ready:2", "readyat", "wait", "leased", "dead", "done",
    "done:s", "done:n", "dedup", "dedup:ev", "counts", "migrated", "log", "queued:0",
    "queued:1", "queued:2", "meta",
)  # fmt: skip
SPACE_SCRIPTS = (
    "enqueue", "claim", "delivered", "retry", "dead", "release", "replay", "prune", "next_due",
    "dead_letters", "import", "changes", "queue_figures",
)  # fmt: skip


def lua(name: str) -> str:
    """The text of lua/<name>.lua."""
    return lua_source("relay.store.redis", f"lua/{name}.lua")


PRELUDE = lua("prelude") + lua("layout")
SCRIPTS = {
    s.name: s
    for s in [
        *(Script(name, PRELUDE + lua(name)) for name in SPACE_SCRIPTS),
        Script("register", lua("register")),  # the global registry's: no prelude
    ]
}


def text(raw: bytes | str) -> str:
    """A string from a script's answer or a reply, as str."""
    return raw.decode() if isinstance(raw, bytes) else raw
