"""Who is on the other end of a public request: client IP and user agent."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from fastapi import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in trusted)


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _without_zone(address: str) -> str:
    """An IPv6 zone ("fe80::1%eth0") names our interface, not the client; without it any
    address fits the column (45 characters)."""
    return address.partition("%")[0]


def _valid_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(_without_zone(value.strip())))
    except ValueError:
        return None


def client_ip(request: Request, trusted_proxies: Sequence[str]) -> str:
    """The peer's address; X-Forwarded-For only when the peer is one of TRUSTED_PROXIES.

    The chain is read from the right, skipping our own proxies, so a client cannot choose
    its address by sending an X-Forwarded-For of its own.
    """
    peer = _without_zone(request.client.host if request.client else "")[:45]
    trusted = tuple(trusted_proxies)
    if not trusted:
        return peer
    networks = _networks(trusted)
    if not _is_trusted(peer, networks):
        return peer
    # Every header line, in order, is one comma list (RFC 9110 section 5.3): a proxy may add
    # its hop as a line of its own, and the right-most hops are the ones we can believe.
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [h.strip() for h in forwarded.split(",") if h.strip()][-32:]
    for hop in reversed(hops):
        ip = _valid_ip(hop)
        if ip is None:
            break
        if not _is_trusted(ip, networks):
            return ip
    return peer


def user_agent(request: Request) -> str | None:
    ua = request.headers.get("user-agent")
    return ua[:512] if ua else None
