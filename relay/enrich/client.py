"""What the relay knows of a request's sender, whatever the sender claims."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# The most of a User-Agent header the relay keeps: real ones are a few hundred characters;
# the header is the sender's to write, up to the whole head's 16 KiB.
MAX_USER_AGENT = 512


@dataclass(frozen=True)
class Client:
    """What the relay knows of the sender of a request, independent of what it claims."""

    ip: str | None
    user_agent: str | None
    comet_token: str


def client_address(host: str | None) -> str | None:
    """The client's IP address in canonical form, or None when `host` is not an IP address.

    `host` is the peer address, or the right-most untrusted `X-Forwarded-For` hop when the
    peer is a trusted proxy (uvicorn's ProxyHeadersMiddleware). A proxy may put a word there
    (`unknown`, an obfuscated `_hidden`), and no such word may become an event's `ip`. An
    IPv4 address mapped into IPv6 (a dual-stack socket) is given as the IPv4 address, and an
    IPv6 zone is dropped.
    """
    if not host:
        return None
    try:
        # A zone (fe80::1%eth0) names an interface of the relay's machine, not the client.
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
