"""Telling crawlers from people by their user agent; crawlers' events are counted and dropped."""

from __future__ import annotations

import functools

import user_agents

from relay.enrich.client import MAX_USER_AGENT

# Crawlers that user-agents (ua-parser) may not know. Automated browsers (HeadlessChrome,
# Playwright, Puppeteer) are deliberately absent: they are people's tests and tools, and the
# snippet does not skip them either (docs/DESIGN.md).
KNOWN_CRAWLERS: tuple[str, ...] = (
    "googlebot",
    "bingbot",
    "ahrefsbot",
    "semrushbot",
    "yandexbot",
    "baiduspider",
    "duckduckbot",
    "applebot",
    "facebookexternalhit",
    "petalbot",
    "bytespider",
    "gptbot",
    "claudebot",
    "ccbot",
    "mj12bot",
    "dotbot",
    "slurp",
)


def is_bot(user_agent: str | None) -> bool:
    """True for a crawler's user agent (user-agents' detection and `KNOWN_CRAWLERS`).

    No user agent at all is not taken for a bot: the event simply carries none.
    """
    if not user_agent:
        return False
    # Bounded, so neither the parser's regexes nor the cache pay for a giant header.
    return _is_bot(user_agent[:MAX_USER_AGENT])


@functools.lru_cache(maxsize=2048)
def _is_bot(user_agent: str) -> bool:
    lowered = user_agent.lower()
    if any(name in lowered for name in KNOWN_CRAWLERS):
        return True
    return bool(user_agents.parse(user_agent).is_bot)
