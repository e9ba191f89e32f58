"""Outgoing HTTP to URLs that users give (webhooks), without server-side request forgery.

A URL's host is resolved once; every address it resolves to must be public (no loopback,
private, link-local, shared, multicast, reserved or unspecified address, IPv4 or IPv6, an
IPv4 address inside IPv6 judged as IPv4), and the connection goes to an address that was
checked: the URL is rewritten to that IP, with the original `Host` header and TLS server
name (certificates are still verified against the host name), so no second lookup can be
rebound to an internal address. No redirects are followed, no proxy from the environment
is used, the whole attempt is bounded by one timeout, and the response body is never read.
`allow_private` (WEBHOOK_ALLOW_PRIVATE) lifts the address and https rules for development
and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

TIMEOUT_SECONDS = 10.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: an IPv4 address inside


class Refused(Exception):
    """The URL may not be called (its scheme, or an address its host resolves to)."""


def is_public(ip: IPAddress) -> bool:
    """Whether `ip` is a public unicast address (IPv4 inside IPv6 is judged as IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
            return is_public(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:  # 2002:0a00:0001:: routes to 10.0.0.1
            return is_public(ip.sixtofour)
        if ip.is_site_local:  # fec0::/10, deprecated but still "global" to Python
            return False
    # is_global alone lets multicast through (224.0.0.1 is "global").
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


async def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses, from the system resolver (getaddrinfo, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_scheme(url: httpx.URL, *, allow_private: bool) -> None:
    if url.scheme != "https" and not (allow_private and url.scheme == "http"):
        raise Refused("the URL must be https")
    if not url.raw_host:
        raise Refused("the URL has no host")
    if url.userinfo:  # would be sent to whoever the URL names and show up in our logs
        raise Refused("the URL must not carry a user name or password")


async def checked_addresses(
    url: httpx.URL, *, allow_private: bool, resolve: Resolver = system_resolve
) -> list[IPAddress]:
    """Every address of the URL's host, each of them public unless `allow_private`."""
    check_scheme(url, allow_private=allow_private)
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        found = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            names = await resolve(host, port)
        except (OSError, UnicodeError):
            raise Refused(f"{host} does not resolve") from None
        # A zone (fe80::1%eth0) is not part of the address.
        found = [ipaddress.ip_address(name.split("%", 1)[0]) for name in names]
    if not found:
        raise Refused(f"{host} does not resolve")
    if not allow_private:
        refused = [str(ip) for ip in found if not is_public(ip)]
        if refused:
            raise Refused(f"{host} resolves to a non-public address ({', '.join(refused)})")
    return found


@dataclass(frozen=True, slots=True)
class Sent:
    """What an attempt got: the response status (None without one), or why it failed."""

    status: int | None
    error: str | None
    duration_ms: int


class OutboundClient:
    """POSTs to user-given URLs under the rules of the module docstring."""

    def __init__(
        self,
        *,
        allow_private: bool,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolver = system_resolve,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self._resolve = resolve
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            verify=verify,  # a context trusting a test CA in tests
            timeout=httpx.Timeout(timeout),
            # No keep-alive: connections are keyed by the pinned IP, and one verified for
            # one host name must never carry a request for another name on the same IP.
            limits=httpx.Limits(max_keepalive_connections=0),
            trust_env=False,  # an HTTP(S)_PROXY would do its own lookup of the host
        )

    async def check(self, url: str) -> None:
        """Refused unless `url` may be called now (endpoint create and update)."""
        await checked_addresses(
            _parse(url), allow_private=self.allow_private, resolve=self._resolve
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Sent:
        """One POST; never raises for what the far end or the network does."""
        start = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._post(_parse(url), body, headers)
        except Refused as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        if status is not None and 300 <= status < 400:
            error = "redirect not followed"
        elif status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        return Sent(status, error, round((time.monotonic() - start) * 1000))

    async def _post(self, url: httpx.URL, body: bytes, headers: Mapping[str, str]) -> int:
        addresses = await checked_addresses(
            url, allow_private=self.allow_private, resolve=self._resolve
        )
        host = url.raw_host.decode("ascii")
        sent_headers = {**headers, "Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        last: httpx.ConnectError | None = None
        for ip in addresses:  # the checked addresses only, in the resolver's order
            request = self._client.build_request(
                "POST",
                url.copy_with(host=str(ip)),
                content=body,
                headers=sent_headers,
                extensions=extensions,
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.ConnectError as exc:
                last = exc
                continue
            await response.aclose()  # the body is ignored: never read
            return response.status_code
        assert last is not None
        raise last

    async def aclose(self) -> None:
        await self._client.aclose()


def _parse(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise Refused(f"not a valid URL: {exc}") from None
