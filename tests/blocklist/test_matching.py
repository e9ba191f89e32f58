"""What a blocklist entry is and what it matches (API.md section 10): normalization of each
kind, and the compiled matcher against the plain meaning of the rules."""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outreach.blocklist.matcher import NEVER, Entry, Matcher
from outreach.blocklist.models import BlockKind
from outreach.blocklist.values import normalize


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [
        (BlockKind.EMAIL, "  Spam.Bot@Example.COM ", "spam.bot@example.com"),
        (BlockKind.DOMAIN, "Example.COM.", "example.com"),
        (BlockKind.DOMAIN, "ru", "ru"),
        (BlockKind.DOMAIN, "bücher.example", "bücher.example"),
        (BlockKind.IP, "203.0.113.7", "203.0.113.7"),
        (BlockKind.IP, "203.0.113.7/32", "203.0.113.7"),
        (BlockKind.IP, "203.0.113.77/24", "203.0.113.0/24"),
        (BlockKind.IP, "2001:DB8::1/48", "2001:db8::/48"),
        (BlockKind.IP, "::ffff:203.0.113.7", "203.0.113.7"),
        (BlockKind.IP, "::ffff:203.0.113.0/120", "203.0.113.0/24"),
    ],
)
def test_values_are_stored_in_one_form(kind: BlockKind, raw: str, stored: str) -> None:
    assert normalize(kind, raw) == stored


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        (BlockKind.EMAIL, "not an address"),
        (BlockKind.EMAIL, "a@b"),
        (BlockKind.DOMAIN, "-bad.example"),
        (BlockKind.DOMAIN, "bad-.example"),
        (BlockKind.DOMAIN, "under_score.example"),
        (BlockKind.DOMAIN, "two..dots"),
        (BlockKind.DOMAIN, "a" * 64 + ".example"),
        (BlockKind.DOMAIN, "http://example.com"),
        (BlockKind.IP, "203.0.113.256"),
        (BlockKind.IP, "203.0.113.0/33"),
        (BlockKind.IP, "example.com"),
        (BlockKind.IP, ""),
    ],
)
def test_invalid_values_are_refused(kind: BlockKind, raw: str) -> None:
    with pytest.raises(ValueError, match="must|not a valid"):
        normalize(kind, raw)


def _entries(*pairs: tuple[BlockKind, str]) -> list[Entry]:
    return [Entry(kind, normalize(kind, value), NEVER) for kind, value in pairs]


def test_emails_domains_and_subdomains() -> None:
    matcher = Matcher(
        _entries((BlockKind.EMAIL, "Bot@Spam.example"), (BlockKind.DOMAIN, "flood.example"))
    )
    assert matcher.blocked("bot@spam.example", None)  # stored emails are lower-cased
    assert not matcher.blocked("other@spam.example", None)
    assert matcher.blocked("x@flood.example", None)
    assert matcher.blocked("x@mail.eu.flood.example", None)  # any subdomain
    assert not matcher.blocked("x@notflood.example", None)  # a suffix is not a subdomain
    assert not matcher.blocked("x@flood.example.org", None)


def test_ipv4_and_ipv6_blocks_and_mapped_addresses() -> None:
    matcher = Matcher(
        _entries(
            (BlockKind.IP, "198.51.100.0/24"),
            (BlockKind.IP, "203.0.113.9"),
            (BlockKind.IP, "2001:db8:abcd::/48"),
        )
    )
    assert matcher.blocked("a@ok.example", "198.51.100.200")
    assert not matcher.blocked("a@ok.example", "198.51.101.1")
    assert matcher.blocked("a@ok.example", "203.0.113.9")
    assert not matcher.blocked("a@ok.example", "203.0.113.10")
    assert matcher.blocked("a@ok.example", "2001:db8:abcd:12::5")
    assert not matcher.blocked("a@ok.example", "2001:db8:abce::5")
    assert matcher.blocked("a@ok.example", "::ffff:198.51.100.7")  # IPv4 seen through IPv6
    assert not matcher.blocked("a@ok.example", "not-an-ip")
    assert not matcher.blocked("a@ok.example", None)


def test_an_expired_entry_stops_matching() -> None:
    now = time.time()
    matcher = Matcher(
        [
            Entry(BlockKind.EMAIL, "old@spam.example", now - 1),
            Entry(BlockKind.EMAIL, "new@spam.example", now + 60),
            Entry(BlockKind.IP, "198.51.100.0/24", now - 1),
        ]
    )
    assert not matcher.blocked("old@spam.example", None)
    assert matcher.blocked("new@spam.example", None)
    assert not matcher.blocked("new@spam.example", None, now=now + 61)
    assert not matcher.blocked("a@ok.example", "198.51.100.1")


networks = st.one_of(
    st.builds(
        lambda addr, plen: ipaddress.ip_network(f"{ipaddress.IPv4Address(addr)}/{plen}", False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda addr, plen: ipaddress.ip_network(f"{ipaddress.IPv6Address(addr)}/{plen}", False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
)
addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(networks, max_size=20), st.lists(addresses, min_size=1, max_size=10))
def test_networks_match_exactly_what_ipaddress_says(
    blocks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], probes: list[str]
) -> None:
    matcher = Matcher([Entry(BlockKind.IP, str(n), NEVER) for n in blocks])
    for probe in probes:
        address = ipaddress.ip_address(probe)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        expected = any(address.version == n.version and address in n for n in blocks)
        assert matcher.blocked("a@ok.example", probe) == expected, (probe, blocks)
