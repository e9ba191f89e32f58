"""The SSRF guard of outgoing requests: which addresses are public, one lookup, the connection
to the address that was checked (with the original Host and TLS name), no redirects, no
body read, one timeout. Receivers are real processes on 127.0.0.1 (tests/webhooks)."""

from __future__ import annotations

import ipaddress
import time

import httpx
import pytest

from outreach.outbound.guard import OutboundClient, Refused, checked_addresses, is_public
from tests.receivers import Receiver, Tls
from tests.support import Dns

NOT_PUBLIC = [
    "127.0.0.1",
    "127.255.0.1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # shared address space (carrier NAT)
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "ff0e::1",
    "fec0::1",  # site-local
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:db8::1",  # documentation
    "100::1",  # discard
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://2130706433/",  # 127.0.0.1 as one number: the resolver reads it so
        "https://0x7f.1/",
        "https://localhost/hook",
    ],
)
async def test_literal_and_local_hosts_are_refused(url: str) -> None:
    with pytest.raises(Refused):
        await checked_addresses(httpx.URL(url), allow_private=False)


async def test_every_address_of_a_name_must_be_public(dns: Dns) -> None:
    dns.names["mixed.test"] = ["93.184.215.14", "10.0.0.7"]
    dns.names["public.test"] = ["93.184.215.14", "2606:4700::1111"]
    dns.names["nowhere.test"] = []
    with pytest.raises(Refused, match="10.0.0.7"):
        await checked_addresses(httpx.URL("https://mixed.test/"), allow_private=False)
    with pytest.raises(Refused, match="does not resolve"):
        await checked_addresses(httpx.URL("https://nowhere.test/"), allow_private=False)
    found = await checked_addresses(httpx.URL("https://public.test/"), allow_private=False)
    assert [str(a) for a in found] == ["93.184.215.14", "2606:4700::1111"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://public.test/", "https"),
        ("ftp://public.test/", "https"),
        ("https://user:secret@public.test/", "user name"),
        ("https:///nohost", "host"),
    ],
)
async def test_https_only_and_no_credentials(dns: Dns, url: str, reason: str) -> None:
    dns.names["public.test"] = ["93.184.215.14"]
    with pytest.raises(Refused, match=reason):
        await checked_addresses(httpx.URL(url), allow_private=False)


async def test_allow_private_lifts_the_rules(dns: Dns) -> None:
    dns.names["inside.test"] = ["10.0.0.7"]
    found = await checked_addresses(httpx.URL("http://inside.test/"), allow_private=True)
    assert [str(a) for a in found] == ["10.0.0.7"]


async def test_a_refused_address_is_never_dialled(dns: Dns, receiver: Receiver) -> None:
    # A name that now resolves to loopback, where a real receiver listens: refused without
    # any connection (the receiver sees nothing).
    dns.names["rebound.test"] = ["127.0.0.1"]
    client = OutboundClient(allow_private=False)
    try:
        sent = await client.post(
            f"https://rebound.test:{receiver.port}/ok/refused-at-send", b"{}", {}
        )
    finally:
        await client.aclose()
    assert sent.status is None
    assert sent.error is not None
    assert "non-public" in sent.error
    assert receiver.requests("/ok/refused-at-send") == []


async def test_the_connection_goes_to_the_checked_address(dns: Dns, receiver: Receiver) -> None:
    # The first lookup answers loopback; any later one would answer a private address that
    # the connect guard refuses to dial. One lookup, and the request reaches the address it
    # checked, carrying the name it was given.
    answers = iter([["127.0.0.1"]])
    dns.names["pinned.test"] = lambda: next(answers, ["10.66.0.1"])
    client = OutboundClient(allow_private=True)
    try:
        sent = await client.post(f"http://pinned.test:{receiver.port}/ok/pinned", b"{}", {})
    finally:
        await client.aclose()
    assert sent.error is None
    assert sent.status == 204
    assert dns.lookups == ["pinned.test"]
    (got,) = receiver.requests("/ok/pinned")
    assert got["headers"]["host"] == f"pinned.test:{receiver.port}"


async def test_tls_is_verified_for_the_name_while_connecting_to_the_ip(dns: Dns, tls: Tls) -> None:
    dns.names["secure.test"] = ["127.0.0.1"]
    dns.names["impostor.test"] = ["127.0.0.1"]
    client = OutboundClient(allow_private=True, verify=tls.ca)
    try:
        ok = await client.post(f"https://secure.test:{tls.receiver.port}/ok/tls", b"{}", {})
        # The same IP under a name its certificate does not carry: refused by TLS.
        wrong = await client.post(
            f"https://impostor.test:{tls.receiver.port}/ok/impostor", b"{}", {}
        )
    finally:
        await client.aclose()
    assert ok.error is None
    assert ok.status == 204
    (got,) = tls.receiver.requests("/ok/tls")
    assert got["headers"]["host"] == f"secure.test:{tls.receiver.port}"
    assert wrong.status is None
    assert wrong.error is not None
    assert "certificate" in wrong.error.lower() or "ssl" in wrong.error.lower()
    assert tls.receiver.requests("/ok/impostor") == []


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    client = OutboundClient(allow_private=True)
    try:
        sent = await client.post(f"{receiver.url}/redirect/guard", b"{}", {})
    finally:
        await client.aclose()
    assert sent.status == 302
    assert sent.error == "redirect not followed"
    assert receiver.requests("/landed") == []


async def test_the_response_body_is_not_read(receiver: Receiver) -> None:
    client = OutboundClient(allow_private=True)
    started = time.monotonic()
    try:
        sent = await client.post(f"{receiver.url}/endless/guard", b"{}", {})
    finally:
        await client.aclose()
    assert sent.status == 200
    assert sent.error is None
    assert time.monotonic() - started < 3  # an endless body, and we are done at once


async def test_one_timeout_bounds_the_attempt(receiver: Receiver) -> None:
    client = OutboundClient(allow_private=True, timeout=1.0)
    try:
        sent = await client.post(f"{receiver.url}/hang/guard", b"{}", {})
    finally:
        await client.aclose()
    assert sent.status is None
    assert sent.error == "timed out after 1 s"
    assert 900 <= sent.duration_ms < 3000


async def test_the_default_timeout_is_ten_seconds() -> None:
    client = OutboundClient(allow_private=True)
    try:
        assert client.timeout == 10.0
    finally:
        await client.aclose()
