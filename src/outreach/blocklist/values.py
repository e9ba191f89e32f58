"""What a blocklist value may be, in its one normalized form, and what an address matches.

- email: a valid address, lower-cased (the stored inquiries' emails are lower-cased too);
- domain: a host name (labels of letters, digits and hyphens, Unicode letters included),
  lower-cased, without a trailing dot; it covers its subdomains (`example.com` blocks
  `mail.example.com`), and a single label blocks a whole top-level domain;
- ip: an address or a CIDR block, IPv4 or IPv6, as its network (`203.0.113.0/24`; a single
  address as itself, `203.0.113.7`); host bits are dropped (`10.0.0.5/24` is `10.0.0.0/24`).
  An IPv4-mapped IPv6 address (`::ffff:203.0.113.7`) is its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re

from outreach.blocklist.models import BlockKind
from outreach.core.schemas import check_email

_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?\Z")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize(kind: BlockKind, raw: str) -> str:
    """The stored form of `raw` for `kind`; ValueError with a message for an invalid one."""
    text = raw.strip()
    if kind is BlockKind.EMAIL:
        return check_email(text)
    if kind is BlockKind.DOMAIN:
        return _domain(text)
    network = parse_network(text)
    return str(network.network_address) if _single(network) else str(network)


def _domain(text: str) -> str:
    name = text.lower().removesuffix(".")
    if not 1 <= len(name) <= 253 or "\x00" in name:
        raise ValueError("must be a domain name of 1..253 characters")
    if any(not _LABEL.match(label) or len(label) > 63 for label in name.split(".")):
        raise ValueError("must be a domain name such as example.com")
    return name


def parse_network(text: str) -> Network:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError("must be an IP address or a CIDR block such as 203.0.113.0/24") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _single(network: Network) -> bool:
    return network.prefixlen == network.max_prefixlen


def domain_of(email: str) -> str:
    return email.rpartition("@")[2].lower()
