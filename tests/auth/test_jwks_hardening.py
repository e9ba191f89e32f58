"""A hostile or broken identity service cannot hold, flood or crash the JWKS fetch; `typ` rules.

`HostileServer` is test_jwks's JwksServer (own thread, own event loop, 127.0.0.1) answering
every request with one body the test controls: dripped a byte at a time, framed by
Content-Length or chunked, with extra headers (Content-Encoding). It records how much of the
body it got out and whether the client hung up first, so a test sees what the client read.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from joserfc import jwt
from joserfc.jwk import ECKey

from outreach.auth.jwks import JwksCache, TokenVerifier
from outreach.core.errors import AuthUnavailable
from tests.auth.test_admin_auth import INQUIRIES, assert_problem, bearer
from tests.auth.test_jwks import (
    AUDIENCE,
    ISSUER,
    FakeClock,
    Hit,
    JwksServer,
    claims,
    es256,
    jwk_public,
    settle,
)
from tests.support import Api, make_settings, start_api

MiB = 1024 * 1024
DEEP = b"[" * 100_000 + b"]" * 100_000  # 200 kB: under the size limit, far over any parser's depth
DRIP = 0.3  # seconds between two bytes of a dripped body


class HostileServer(JwksServer):
    """Answers every request with `body`; `drip` seconds between bytes when set."""

    def __init__(
        self,
        body: bytes,
        *,
        chunked: bool = False,
        drip: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__({"keys": []})
        self.body = body
        self.chunked = chunked
        self.drip = drip
        self.extra_headers = headers or {}
        self.sent = 0  # body bytes written and drained (on their way to the client)
        self.completed = False  # the whole body went out: the client did not hang up first
        self.ended = threading.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.ended.clear()
        self.sent, self.completed = 0, False
        body = self.body
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = head.decode("latin-1").split(" ", 2)
            self.hits.append(Hit(method, path, {}))
            framing = (
                "Transfer-Encoding: chunked" if self.chunked else f"Content-Length: {len(body)}"
            )
            extra = "".join(f"{name}: {value}\r\n" for name, value in self.extra_headers.items())
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n{extra}"
                "Connection: close\r\n\r\n".encode()
            )
            step = 1 if self.drip else 64 * 1024
            for at in range(0, len(body), step):
                piece = body[at : at + step]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece)
                await writer.drain()
                self.sent += len(piece)
                if self.drip:
                    await asyncio.sleep(self.drip)
            if self.chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            self.completed = True
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # the client hung up
        except asyncio.CancelledError:
            pass  # stop() while dripping: end quietly (3.11's stream callback logs a cancel)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.ended.set()


@contextlib.contextmanager
def hostile(body: bytes, **options: Any) -> Iterator[HostileServer]:
    server = HostileServer(body, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def jwks_bytes(key: ECKey, size: int | None = None) -> bytes:
    """A valid JWKS holding `key`, padded with an unknown member to exactly `size` bytes."""
    document: dict[str, Any] = {"keys": [jwk_public(key)], "padding": ""}
    bare = len(json.dumps(document))
    if size is not None:
        document["padding"] = "x" * (size - bare)
    data = json.dumps(document).encode()
    assert size is None or len(data) == size
    return data


def huge(key: ECKey) -> bytes:
    return jwks_bytes(key, 19 * MiB)


def failures(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [entry["error"] for entry in logs if entry["event"] == "JWKS fetch failed"]


async def hung_up(server: HostileServer) -> bool:
    """Whether the client closed the connection before the server got its whole body out."""
    assert await asyncio.to_thread(server.ended.wait, 5), "the server is still sending"
    return not server.completed and server.sent < len(server.body)


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False) as http:
        yield http


def verifier_for(cache: JwksCache) -> TokenVerifier:
    return TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE)


# --------------------------------------------------------------------------- total deadline


async def test_a_dripping_jwks_is_given_up_at_the_total_deadline(
    client: httpx.AsyncClient, key: ECKey
) -> None:
    # One byte every 0.3 s: each read is quick (no per-phase timeout fires), the whole takes
    # a minute. Today's code waited for all of it.
    with hostile(jwks_bytes(key), drip=DRIP) as server, structlog.testing.capture_logs() as logs:
        verifier = verifier_for(JwksCache(server.url, client, deadline=1.0))
        start = time.perf_counter()
        async with asyncio.timeout(8):
            with pytest.raises(AuthUnavailable):
                await verifier.verify(es256(key, claims()))
        elapsed = time.perf_counter() - start
        assert 0.9 <= elapsed < 1.5, elapsed
        assert failures(logs) == ["TimeoutError"]
        assert await hung_up(server)


# --------------------------------------------------------------------------- size limit


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_19_mib_jwks_is_refused_without_reading_it(
    client: httpx.AsyncClient, key: ECKey, framing: str
) -> None:
    # A valid JWKS holding our key: today's code read all 19 MiB and accepted the key.
    with (
        hostile(huge(key), chunked=framing == "chunked") as server,
        structlog.testing.capture_logs() as logs,
    ):
        verifier = verifier_for(JwksCache(server.url, client))
        tracemalloc.start()
        start = time.perf_counter()
        try:
            with pytest.raises(AuthUnavailable):
                await verifier.verify(es256(key, claims()))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert time.perf_counter() - start < 2
        assert peak < 4 * MiB, peak
        assert failures(logs) == ["JwksTooLarge"]
        assert await hung_up(server)  # the client stopped reading; it did not drain the body


async def test_a_compressed_jwks_is_refused_before_it_is_inflated(
    client: httpx.AsyncClient, key: ECKey
) -> None:
    # 19 kB on the wire, 19 MiB once gunzipped. The fetch asks for an identity encoding; an
    # answer compressed anyway is refused unread rather than inflated.
    body = gzip.compress(huge(key))
    assert len(body) < 64 * 1024
    with (
        hostile(body, headers={"Content-Encoding": "gzip"}) as server,
        structlog.testing.capture_logs() as logs,
    ):
        verifier = verifier_for(JwksCache(server.url, client))
        with pytest.raises(AuthUnavailable):
            await verifier.verify(es256(key, claims()))
        assert failures(logs) == ["JwksEncoded"]
        assert server.count == 1


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_the_size_limit_is_inclusive(
    client: httpx.AsyncClient, key: ECKey, framing: str
) -> None:
    limit = 2048
    with hostile(jwks_bytes(key, limit), chunked=framing == "chunked") as server:
        verifier = verifier_for(JwksCache(server.url, client, max_bytes=limit))
        assert (await verifier.verify(es256(key, claims()))).sub == "user-42"
    with (
        hostile(jwks_bytes(key, limit + 1), chunked=framing == "chunked") as server,
        structlog.testing.capture_logs() as logs,
    ):
        verifier = verifier_for(JwksCache(server.url, client, max_bytes=limit))
        with pytest.raises(AuthUnavailable):
            await verifier.verify(es256(key, claims()))
        assert failures(logs) == ["JwksTooLarge"]


# --------------------------------------------------------------------------- unparsable


async def test_a_deeply_nested_jwks_is_a_failed_fetch_not_an_exception(
    client: httpx.AsyncClient, key: ECKey
) -> None:
    # Today's code parsed with the json module: RecursionError reached the request (a 500).
    with hostile(DEEP) as server, structlog.testing.capture_logs() as logs:
        cache = JwksCache(server.url, client)
        with pytest.raises(AuthUnavailable):
            await verifier_for(cache).verify(es256(key, claims()))
        assert cache.fetch_count == 1
        assert failures(logs) == ["JSONDecodeError"]


# --------------------------------------------------------------------------- cached keys survive


@pytest.mark.parametrize("turns", ["drip", "huge", "deep"])
async def test_cached_keys_keep_working_when_the_jwks_turns_hostile(
    client: httpx.AsyncClient, key: ECKey, turns: str
) -> None:
    clock = FakeClock()
    with hostile(jwks_bytes(key)) as server, structlog.testing.capture_logs() as logs:
        cache = JwksCache(server.url, client, deadline=1.0, clock=clock)
        verifier = verifier_for(cache)
        assert (await verifier.verify(es256(key, claims()))).sub == "user-42"
        server.body = {"drip": jwks_bytes(key), "huge": huge(key), "deep": DEEP}[turns]
        server.drip = DRIP if turns == "drip" else 0.0
        clock.advance(301)  # past the TTL: the next use refreshes in the background
        assert (await verifier.verify(es256(key, claims(sub="during")))).sub == "during"
        await asyncio.wait_for(settle(cache), 3)
        assert cache.fetch_count == 2
        assert len(failures(logs)) == 1
        assert (await verifier.verify(es256(key, claims(sub="after")))).sub == "after"
        assert cache.has_keys


# --------------------------------------------------------------------------- over HTTP


@pytest.mark.parametrize("name", ["drip", "huge", "deep"])
async def test_a_hostile_jwks_is_503_auth_unavailable_over_http(
    pg_database: str, var_dir: Path, dev_key: ECKey, key: ECKey, name: str
) -> None:
    """The app's own cache, default limits: a dripped, huge or deep JWKS is a timely 503."""
    body = {"drip": jwks_bytes(key), "huge": huge(key), "deep": DEEP}[name]
    with hostile(body, drip=DRIP if name == "drip" else 0.0) as server:
        settings = make_settings(
            pg_database, var_dir, jwks_url=server.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
        )
        async with start_api(settings, dev_key) as api:
            start = time.perf_counter()
            async with asyncio.timeout(10):  # today's code took a minute over the drip
                response = await api.client.get(INQUIRIES, headers=bearer(es256(key, claims())))
            elapsed = time.perf_counter() - start
    assert_problem(response, 503, "auth-unavailable")
    # the drip is given up at the 5 s default deadline; the others at once
    assert elapsed < (5.0 + 1.0 if name == "drip" else 2.0), elapsed


# --------------------------------------------------------------------------- typ header

ABSENT = object()


def typed_token(api: Api, typ: object) -> str:
    header: dict[str, Any] = {"alg": "ES256", "kid": api.key.kid}
    if typ is not ABSENT:
        header["typ"] = typ
    payload = {"sub": "typ-user", "exp": int(time.time()) + 300, "roles": ["OWNER"]}
    return jwt.encode(header, payload, api.key, algorithms=["ES256"])


@pytest.mark.parametrize(
    "typ",
    [ABSENT, "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt", "application/JWT"],
    ids=["absent", "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt", "application/JWT"],
)
async def test_an_access_token_typ_is_accepted(pg_api: Api, typ: object) -> None:
    response = await pg_api.client.get(INQUIRIES, headers=bearer(typed_token(pg_api, typ)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "typ",
    ["id+jwt", "JOSE+JSON", "JOSE", "application/id+jwt", "logout+jwt", "", "JWT ", "x/at+jwt"],
)
async def test_any_other_typ_is_401_invalid_token(pg_api: Api, typ: str) -> None:
    token = typed_token(pg_api, typ)
    for _ in range(2):  # a refusal is never remembered as a success
        response = await pg_api.client.get(INQUIRIES, headers=bearer(token))
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
