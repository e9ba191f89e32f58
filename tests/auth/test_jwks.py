"""The JWKS key cache and the token verifier, against a real local HTTP JWKS server.

`JwksServer` is a hand-written HTTP/1.1 server on 127.0.0.1 that runs its own event loop in a
thread, so a client that blocked the test's event loop would still get its answer late (and be
seen blocking) instead of dead-locking the test. It serves a JWKS document the test controls,
counts requests, records their headers, and can be made slow or down (503, connection dropped,
connection refused).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import string
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from outreach.auth.devkeys import load_or_create_key, mint_token, public_jwks
from outreach.auth.jwks import (
    MAX_TOKEN_LENGTH,
    InvalidToken,
    JwksCache,
    StaticKeys,
    TokenVerifier,
    VerifiedToken,
)
from outreach.auth.principal import AuthPrincipal, authenticate, bearer_token
from outreach.core.context import request_id_var
from outreach.core.errors import AuthUnavailable, Unauthorized

ISSUER = "https://id.example"
AUDIENCE = "outreach-admin"
JWKS_PATH = "/.well-known/jwks.json"
ATTACKER_PATH = "/attacker/jwks.json"

Mode = Literal["ok", "503", "drop"]


# --------------------------------------------------------------------------- the JWKS server


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]


class JwksServer:
    """A tiny HTTP/1.1 JWKS server in its own thread and event loop."""

    def __init__(self, jwks: dict[str, Any], attacker_jwks: dict[str, Any] | None = None) -> None:
        self.jwks = jwks
        self.attacker_jwks = attacker_jwks or {"keys": []}
        self.delay = 0.0
        self.mode: Mode = "ok"
        self.hits: list[Hit] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    @property
    def attacker_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{ATTACKER_PATH}"

    @property
    def count(self) -> int:
        return len(self.hits)

    def _call(self, make: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def start(self) -> None:
        self._thread.start()
        self._server = self._call(lambda: asyncio.start_server(self._handle, "127.0.0.1", 0))
        assert self._server is not None
        self.port = self._server.sockets[0].getsockname()[1]

    def refuse_connections(self) -> None:
        """Stop listening: new connections are refused (the identity service is gone)."""
        server = self._server
        assert server is not None

        async def close() -> None:
            server.close()
            await server.wait_closed()

        self._call(close)

    def stop(self) -> None:
        async def finish() -> None:
            if self._server is not None and self._server.is_serving():
                self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        self._call(finish)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            self.hits.append(Hit(method, path, headers))
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.mode == "drop":
                return  # close without an answer
            if self.mode == "503":
                status, body = "503 Service Unavailable", b'{"error":"down"}'
            elif path == JWKS_PATH:
                status, body = "200 OK", json.dumps(self.jwks).encode()
            elif path == ATTACKER_PATH:
                status, body = "200 OK", json.dumps(self.attacker_jwks).encode()
            else:
                status, body = "404 Not Found", b"{}"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class FakeClock:
    """A monotonic clock the test moves by hand (the cache's notion of time only)."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --------------------------------------------------------------------------- tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


DROP = object()


def claims(**changes: Any) -> dict[str, Any]:
    """Good claims for the verifier under test; a value of DROP removes that claim."""
    now = int(time.time())
    out: dict[str, Any] = {
        "sub": "user-42",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "roles": ["OWNER"],
    }
    for name, value in changes.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def es256(key: ECKey, payload: dict[str, Any], **header: Any) -> str:
    full: dict[str, Any] = {"alg": "ES256", "typ": "JWT", "kid": key.kid}
    full.update(header)
    return jwt.encode(full, payload, key, algorithms=["ES256"])


def jwk_public(key: ECKey) -> dict[str, Any]:
    data = key.as_dict(private=False)
    data.update(alg="ES256", use="sig")
    return data


def hs256_by_hand(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


@pytest.fixture(scope="module")
def attacker() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


@pytest.fixture
def server(key: ECKey, attacker: ECKey) -> Iterator[JwksServer]:
    srv = JwksServer({"keys": [jwk_public(key)]}, {"keys": [jwk_public(attacker)]})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # one client for the module, as the service has one for its life (each server answers
    # `Connection: close`, so no connection outlives its test)
    async with httpx.AsyncClient(follow_redirects=False) as http:
        yield http


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(server: JwksServer, client: httpx.AsyncClient, clock: FakeClock) -> JwksCache:
    return JwksCache(server.url, client, clock=clock)


@pytest.fixture
def verifier(cache: JwksCache) -> TokenVerifier:
    return TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE)


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token)
    return str(info.value)


async def settle(cache: JwksCache) -> None:
    """Let a background refresh the cache started finish."""
    for _ in range(200):
        if cache._inflight is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background JWKS refresh never finished")


# --------------------------------------------------------------------------- accepted tokens


async def test_a_valid_es256_token_is_accepted(
    verifier: TokenVerifier, key: ECKey, server: JwksServer
) -> None:
    verified = await verifier.verify(es256(key, claims(roles=["OWNER", "CASHIER"])))
    assert isinstance(verified, VerifiedToken)
    assert verified.sub == "user-42"
    assert verified.roles == ("OWNER", "CASHIER")
    assert verified.claims["iss"] == ISSUER
    assert server.count == 1
    assert (server.hits[0].method, server.hits[0].path) == ("GET", JWKS_PATH)


@pytest.mark.parametrize(
    ("role_claims", "roles"),
    [
        ({"roles": ["EMPLOYEE"]}, ("EMPLOYEE",)),
        ({"roles": DROP, "role": "OWNER"}, ("OWNER",)),
        ({"roles": "CASHIER"}, ("CASHIER",)),
        ({"roles": [], "role": "OWNER"}, ("OWNER",)),
        ({"roles": ["OWNER", "OWNER", 7, None, "", "X" * 65]}, ("OWNER",)),
        ({"roles": DROP}, ()),
        ({"roles": {"OWNER": True}}, ()),
    ],
    ids=[
        "roles-list",
        "role-string",
        "roles-string",
        "empty-roles-and-role",
        "junk",
        "none",
        "dict",
    ],
)
async def test_roles_come_from_roles_or_role(
    verifier: TokenVerifier, key: ECKey, role_claims: dict[str, Any], roles: tuple[str, ...]
) -> None:
    verified = await verifier.verify(es256(key, claims(**role_claims)))
    assert verified.roles == roles


async def test_audience_may_be_a_list_holding_ours(verifier: TokenVerifier, key: ECKey) -> None:
    verified = await verifier.verify(es256(key, claims(aud=["other", AUDIENCE])))
    assert verified.sub == "user-42"


async def test_expiry_and_not_before_have_30_seconds_leeway(
    verifier: TokenVerifier, key: ECKey
) -> None:
    now = int(time.time())
    assert (await verifier.verify(es256(key, claims(exp=now - 10)))).sub == "user-42"
    assert (await verifier.verify(es256(key, claims(nbf=now + 10)))).sub == "user-42"
    await refused(verifier, es256(key, claims(exp=now - 45)))
    await refused(verifier, es256(key, claims(nbf=now + 120)))


async def test_issuer_and_audience_are_optional_when_not_configured(
    cache: JwksCache, key: ECKey
) -> None:
    lenient = TokenVerifier(cache)
    token = es256(key, claims(iss=DROP, aud=DROP))
    assert (await lenient.verify(token)).sub == "user-42"
    # the configured verifier insists on them
    strict = TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE)
    await refused(strict, token)


# --------------------------------------------------------------------------- attacks


@dataclass(frozen=True)
class Ctx:
    """What an attack token is made from: our key, the attacker's key, the JWKS server."""

    key: ECKey
    attacker: ECKey
    server: JwksServer


def _alg_none(_ctx: Ctx) -> str:
    return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims())}."


def _alg_none_with_kid(ctx: Ctx) -> str:
    return f"{b64json({'alg': 'none', 'kid': ctx.key.kid})}.{b64json(claims())}."


def _alg_none_capitalised(ctx: Ctx) -> str:
    return f"{b64json({'alg': 'None', 'kid': ctx.key.kid})}.{b64json(claims())}.AAAA"


def _hs256_public_pem(ctx: Ctx) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": ctx.key.kid}
    return hs256_by_hand(header, claims(), ctx.key.as_pem(private=False))


def _hs256_public_jwk(ctx: Ctx) -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": ctx.key.kid}
    secret = json.dumps(jwk_public(ctx.key), separators=(",", ":")).encode()
    return hs256_by_hand(header, claims(), secret)


def _rs256_same_kid(ctx: Ctx) -> str:
    rsa = RSAKey.generate_key(2048)
    return jwt.encode({"alg": "RS256", "kid": ctx.key.kid}, claims(), rsa, algorithms=["RS256"])


def _es256_by_other_key_same_kid(ctx: Ctx) -> str:
    return es256(ctx.attacker, claims(), kid=ctx.key.kid)


def _expired(ctx: Ctx) -> str:
    return es256(ctx.key, claims(exp=int(time.time()) - 31 - 5))


def _not_yet_valid(ctx: Ctx) -> str:
    return es256(ctx.key, claims(nbf=int(time.time()) + 31 + 30))


def _wrong_aud(ctx: Ctx) -> str:
    return es256(ctx.key, claims(aud="another-service"))


def _wrong_iss(ctx: Ctx) -> str:
    return es256(ctx.key, claims(iss="https://evil.example"))


def _missing_aud(ctx: Ctx) -> str:
    return es256(ctx.key, claims(aud=DROP))


def _missing_iss(ctx: Ctx) -> str:
    return es256(ctx.key, claims(iss=DROP))


def _missing_exp(ctx: Ctx) -> str:
    return es256(ctx.key, claims(exp=DROP))


def _missing_sub(ctx: Ctx) -> str:
    return es256(ctx.key, claims(sub=DROP))


def _empty_sub(ctx: Ctx) -> str:
    return es256(ctx.key, claims(sub=""))


def _numeric_sub(ctx: Ctx) -> str:
    return es256(ctx.key, claims(sub=42))


def _string_exp(ctx: Ctx) -> str:
    return es256(ctx.key, claims(exp=str(int(time.time()) + 300)))


def _tampered_payload(ctx: Ctx) -> str:
    header, _, signature = es256(ctx.key, claims(roles=["CASHIER"])).split(".")
    return f"{header}.{b64json(claims(roles=['OWNER']))}.{signature}"


def _tampered_signature(ctx: Ctx) -> str:
    header, payload, signature = es256(ctx.key, claims()).split(".")
    flipped = bytearray(base64.urlsafe_b64decode(signature + "=="))
    flipped[10] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(flipped))}"


def _embedded_jwk_attacker_kid(ctx: Ctx) -> str:
    return es256(ctx.attacker, claims(), jwk=jwk_public(ctx.attacker))


def _embedded_jwk_our_kid(ctx: Ctx) -> str:
    return es256(ctx.attacker, claims(), kid=ctx.key.kid, jwk=jwk_public(ctx.attacker))


def _jku_attacker_kid(ctx: Ctx) -> str:
    return es256(ctx.attacker, claims(), jku=ctx.server.attacker_url)


def _jku_our_kid(ctx: Ctx) -> str:
    return es256(ctx.attacker, claims(), kid=ctx.key.kid, jku=ctx.server.attacker_url)


def _x5u_our_kid(ctx: Ctx) -> str:
    return es256(ctx.attacker, claims(), kid=ctx.key.kid, x5u=ctx.server.attacker_url)


def _no_kid_signed_by_attacker(ctx: Ctx) -> str:
    header = {"alg": "ES256", "typ": "JWT", "jwk": jwk_public(ctx.attacker)}
    return jwt.encode(header, claims(), ctx.attacker, algorithms=["ES256"])


def _id_token_typ(ctx: Ctx) -> str:
    return es256(ctx.key, claims(), typ="id+jwt")  # an OIDC ID token is not an access token


def _ten_kilobytes(ctx: Ctx) -> str:
    token = es256(ctx.key, claims(padding="x" * 10 * 1024))
    assert len(token) > MAX_TOKEN_LENGTH
    return token


ATTACKS: dict[str, Callable[[Ctx], str]] = {
    "alg-none": _alg_none,
    "alg-none-with-our-kid": _alg_none_with_kid,
    "alg-None-with-signature": _alg_none_capitalised,
    "hs256-with-public-pem-as-secret": _hs256_public_pem,
    "hs256-with-public-jwk-as-secret": _hs256_public_jwk,
    "rs256-same-kid": _rs256_same_kid,
    "es256-other-key-same-kid": _es256_by_other_key_same_kid,
    "expired-beyond-leeway": _expired,
    "nbf-beyond-leeway": _not_yet_valid,
    "wrong-aud": _wrong_aud,
    "wrong-iss": _wrong_iss,
    "missing-aud": _missing_aud,
    "missing-iss": _missing_iss,
    "missing-exp": _missing_exp,
    "missing-sub": _missing_sub,
    "empty-sub": _empty_sub,
    "numeric-sub": _numeric_sub,
    "string-exp": _string_exp,
    "tampered-payload": _tampered_payload,
    "tampered-signature": _tampered_signature,
    "embedded-jwk-attacker-kid": _embedded_jwk_attacker_kid,
    "embedded-jwk-our-kid": _embedded_jwk_our_kid,
    "jku-attacker-kid": _jku_attacker_kid,
    "jku-our-kid": _jku_our_kid,
    "x5u-our-kid": _x5u_our_kid,
    "no-kid-embedded-jwk": _no_kid_signed_by_attacker,
    "id-token-typ": _id_token_typ,
    "ten-kilobytes": _ten_kilobytes,
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_attack_tokens_are_refused(
    attack: str, verifier: TokenVerifier, key: ECKey, attacker: ECKey, server: JwksServer
) -> None:
    # The cache holds our key first, so a refusal is about the token, not a missing key.
    assert (await verifier.verify(es256(key, claims()))).sub == "user-42"
    token = ATTACKS[attack](Ctx(key, attacker, server))
    reason = await refused(verifier, token)
    assert token not in reason  # refusal reasons are logged: never the token
    # Nothing in a token's header makes the service fetch a URL it names.
    assert {hit.path for hit in server.hits} == {JWKS_PATH}


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        " ",
        "null",
        "Bearer",
        "a.b",
        "a.b.c",
        "a.b.c.d.e",
        "...",
        "é.é.é",
        "\x00.\x00.\x00",
        "eyJhbGciOiJFUzI1NiJ9.e30",
        "eyJhbGciOiJFUzI1NiJ9.%%%.$$$",
        "eyJhbGciOiJFUzI1NiJ9..",
        b64json(["ES256"]) + ".e30.AA",
        b64json({"alg": ["ES256"]}) + ".e30.AA",
        b64json({"alg": "ES256", "kid": {"x": 1}}) + ".e30.AA",
        "x" * 20_000,
        "." * 10_000,
    ],
)
async def test_garbage_is_refused_as_invalid(verifier: TokenVerifier, garbage: str) -> None:
    await refused(verifier, garbage)


async def test_valid_header_with_bad_payload_json_is_refused(
    verifier: TokenVerifier, key: ECKey
) -> None:
    header, _, _ = es256(key, claims()).split(".")
    for payload in (b"[1, 2]", b'"sub"', b"\xff\xfe", b"{"):
        signing_input = f"{header}.{b64url(payload)}"
        await refused(verifier, f"{signing_input}.{b64url(b'x' * 64)}")


# --------------------------------------------------------------------------- the cache


def random_kid() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=24))


async def test_200_concurrent_unknown_kids_cause_exactly_one_fetch(
    verifier: TokenVerifier, key: ECKey, attacker: ECKey, server: JwksServer
) -> None:
    server.delay = 0.3
    unknown = [es256(attacker, claims(), kid=random_kid()) for _ in range(200)]
    good = [es256(key, claims(sub=f"user-{i}")) for i in range(5)]

    async def arriving(token: str, after: float) -> VerifiedToken:
        await asyncio.sleep(after)
        return await verifier.verify(token)

    # Callers arrive over 0.15 s, all while the one (0.3 s) fetch is under way.
    delays = [i * 0.15 / 205 for i in range(205)]
    random.shuffle(delays)
    results = await asyncio.gather(
        *(arriving(token, after) for token, after in zip(unknown + good, delays, strict=True)),
        return_exceptions=True,
    )
    assert all(isinstance(r, InvalidToken) for r in results[:200]), results[:3]
    assert [r.sub for r in results[200:] if isinstance(r, VerifiedToken)] == [
        f"user-{i}" for i in range(5)
    ]
    assert server.count == 1
    # and right after, more unknown kids still make no fetch (minimum refetch interval)
    for token in unknown[:20]:
        await refused(verifier, token)
    assert server.count == 1


async def test_unknown_kid_refetches_at_most_once_per_30_seconds(
    verifier: TokenVerifier, key: ECKey, attacker: ECKey, server: JwksServer, clock: FakeClock
) -> None:
    await verifier.verify(es256(key, claims()))
    assert server.count == 1

    async def unknown_kid_after(seconds: float) -> int:
        clock.advance(seconds)
        await refused(verifier, es256(attacker, claims(), kid=random_kid()))
        return server.count

    assert await unknown_kid_after(1) == 2  # t=1: the first unknown kid refetches
    assert await unknown_kid_after(10) == 2  # t=11
    assert await unknown_kid_after(19.9) == 2  # t=30.9: less than 30 s since that refetch
    assert await unknown_kid_after(0.1) == 3  # t=31: 30 s since, one more
    assert await unknown_kid_after(0) == 3
    assert await unknown_kid_after(29.9) == 3
    assert await unknown_kid_after(0.1) == 4
    # a known kid never waits on, nor causes, a fetch (the TTL has not passed)
    await verifier.verify(es256(key, claims()))
    assert server.count == 4


def rotate(server: JwksServer, key: ECKey) -> ECKey:
    """The identity service publishes a new key next to the old one."""
    rotated = ECKey.generate_key("P-256", auto_kid=True)
    server.jwks = {"keys": [jwk_public(key), jwk_public(rotated)]}
    return rotated


async def test_a_rotated_key_is_accepted_on_first_sight(
    verifier: TokenVerifier, key: ECKey, server: JwksServer, clock: FakeClock
) -> None:
    await verifier.verify(es256(key, claims()))
    assert server.count == 1
    rotated = rotate(server, key)
    clock.advance(30)
    verified = await verifier.verify(es256(rotated, claims(sub="after-rotation")))
    assert verified.sub == "after-rotation"
    assert server.count == 2
    # the old key keeps working, both without another fetch
    await verifier.verify(es256(key, claims()))
    await verifier.verify(es256(rotated, claims()))
    assert server.count == 2


async def test_a_key_rotated_just_after_the_first_fetch_is_accepted_at_once(
    verifier: TokenVerifier, key: ECKey, server: JwksServer, clock: FakeClock
) -> None:
    # PyJWKClient counted its cooldown from any fetch and refused such a key for 30 s.
    await verifier.verify(es256(key, claims()))
    rotated = rotate(server, key)
    clock.advance(1)
    assert (await verifier.verify(es256(rotated, claims(sub="new-key")))).sub == "new-key"
    assert server.count == 2


async def test_a_key_rotated_just_after_a_ttl_refresh_is_accepted_at_once(
    verifier: TokenVerifier, cache: JwksCache, key: ECKey, server: JwksServer, clock: FakeClock
) -> None:
    await verifier.verify(es256(key, claims()))
    clock.advance(301)
    await verifier.verify(es256(key, claims()))  # past the TTL: refreshed in the background
    await settle(cache)
    assert server.count == 2
    rotated = rotate(server, key)
    clock.advance(2)
    assert (await verifier.verify(es256(rotated, claims(sub="new-key")))).sub == "new-key"
    assert server.count == 3


async def test_unknown_kid_spam_delays_a_rotated_key_by_at_most_30_seconds(
    verifier: TokenVerifier, key: ECKey, attacker: ECKey, server: JwksServer, clock: FakeClock
) -> None:
    await verifier.verify(es256(key, claims()))
    clock.advance(1)
    await refused(verifier, es256(attacker, claims(), kid=random_kid()))  # refetch at t=1
    rotated = rotate(server, key)
    clock.advance(5)
    await refused(verifier, es256(rotated, claims()))  # t=6: still the refetch interval
    assert server.count == 2
    clock.advance(25)
    assert (await verifier.verify(es256(rotated, claims()))).sub == "user-42"  # t=31
    assert server.count == 3


async def test_a_key_removed_from_the_jwks_stops_working_after_a_refresh(
    verifier: TokenVerifier, key: ECKey, server: JwksServer, clock: FakeClock, cache: JwksCache
) -> None:
    await verifier.verify(es256(key, claims()))
    rotated = ECKey.generate_key("P-256", auto_kid=True)
    server.jwks = {"keys": [jwk_public(rotated)]}
    clock.advance(301)  # past the TTL: the next use refreshes in the background
    await verifier.verify(es256(key, claims()))
    await settle(cache)
    assert server.count == 2
    await refused(verifier, es256(key, claims()))
    assert (await verifier.verify(es256(rotated, claims()))).sub == "user-42"


async def test_jwks_entries_that_are_not_es256_signing_keys_are_ignored(
    verifier: TokenVerifier, key: ECKey, server: JwksServer
) -> None:
    rsa = RSAKey.generate_key(2048)
    rsa_public = rsa.as_dict(private=False)
    rsa_public.update(kid="rsa-1", alg="RS256", use="sig")
    p384 = ECKey.generate_key("P-384", auto_kid=True)
    enc = ECKey.generate_key("P-256", auto_kid=True)
    enc_public = jwk_public(enc)
    enc_public["use"] = "enc"
    server.jwks = {
        "keys": [rsa_public, p384.as_dict(private=False), enc_public, "junk", jwk_public(key)]
    }
    assert (await verifier.verify(es256(key, claims()))).sub == "user-42"
    await refused(verifier, es256(enc, claims()))
    await refused(
        verifier, jwt.encode({"alg": "RS256", "kid": "rsa-1"}, claims(), rsa, algorithms=["RS256"])
    )


# --------------------------------------------------------------------------- outages


async def _take_down(server: JwksServer, how: str) -> None:
    if how == "refused":
        server.refuse_connections()
    else:
        server.mode = "503" if how == "503" else "drop"


@pytest.mark.parametrize("how", ["503", "drop", "refused"])
async def test_cached_keys_keep_working_while_the_identity_service_is_down(
    how: str,
    verifier: TokenVerifier,
    cache: JwksCache,
    key: ECKey,
    attacker: ECKey,
    server: JwksServer,
    clock: FakeClock,
) -> None:
    await verifier.verify(es256(key, claims()))
    await _take_down(server, how)
    clock.advance(3600)  # far past the TTL and the refetch interval: refreshes are attempted
    for i in range(3):
        assert (await verifier.verify(es256(key, claims(sub=f"u{i}")))).sub == f"u{i}"
        await settle(cache)
    # an unknown kid during the outage is a 401, not a 503: the service does have keys
    clock.advance(60)
    await refused(verifier, es256(attacker, claims(), kid=random_kid()))
    assert (await verifier.verify(es256(key, claims()))).sub == "user-42"
    assert cache.has_keys


@pytest.mark.parametrize("how", ["503", "drop", "refused", "empty-jwks", "not-a-jwks"])
async def test_no_keys_at_all_is_auth_unavailable_not_401(
    how: str, verifier: TokenVerifier, key: ECKey, server: JwksServer, clock: FakeClock
) -> None:
    if how == "empty-jwks":
        server.jwks = {"keys": []}
    elif how == "not-a-jwks":
        server.jwks = {"unexpected": "document"}
    else:
        await _take_down(server, how)
    token = es256(key, claims())
    with pytest.raises(AuthUnavailable) as info:
        await verifier.verify(token)
    assert info.value.status == 503
    assert info.value.slug == "auth-unavailable"
    assert info.value.headers is not None
    assert "Retry-After" in info.value.headers
    # still unavailable (and no hammering) within the refetch interval
    hits = server.count
    clock.advance(5)
    with pytest.raises(AuthUnavailable):
        await verifier.verify(token)
    assert server.count == hits


async def test_keys_come_back_when_the_identity_service_does(
    verifier: TokenVerifier, key: ECKey, server: JwksServer, clock: FakeClock
) -> None:
    server.mode = "503"
    token = es256(key, claims())
    with pytest.raises(AuthUnavailable):
        await verifier.verify(token)
    server.mode = "ok"
    clock.advance(30)
    assert (await verifier.verify(token)).sub == "user-42"


async def test_a_jwks_slower_than_the_timeout_is_given_up(
    server: JwksServer, client: httpx.AsyncClient, key: ECKey, clock: FakeClock
) -> None:
    server.delay = 2.0
    impatient = TokenVerifier(JwksCache(server.url, client, timeout=0.3, clock=clock))
    start = time.perf_counter()
    with pytest.raises(AuthUnavailable):
        await impatient.verify(es256(key, claims()))
    assert time.perf_counter() - start < 1.5


# --------------------------------------------------------------------------- event loop, request id


async def test_a_slow_jwks_does_not_block_the_event_loop(
    verifier: TokenVerifier, key: ECKey, server: JwksServer
) -> None:
    server.delay = 1.5
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        ticks.append(time.perf_counter())
        while not done.is_set():
            await asyncio.sleep(0.01)
            ticks.append(time.perf_counter())

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    verified = await verifier.verify(es256(key, claims()))
    waited = time.perf_counter() - start
    done.set()
    await ticking
    assert verified.sub == "user-42"
    assert waited >= 1.4  # the verification really waited on the slow fetch...
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(gaps) < 0.2  # ...while everything else kept running
    assert len(ticks) > 50


async def test_the_request_id_is_forwarded_on_the_jwks_fetch(
    verifier: TokenVerifier, key: ECKey, server: JwksServer
) -> None:
    reset = request_id_var.set("req-7f3a.b:c-9")
    try:
        await verifier.verify(es256(key, claims()))
    finally:
        request_id_var.reset(reset)
    assert server.count == 1
    assert server.hits[0].headers.get("x-request-id") == "req-7f3a.b:c-9"
    assert "json" in server.hits[0].headers.get("accept", "")


async def test_a_background_refresh_carries_the_triggering_request_id(
    verifier: TokenVerifier, cache: JwksCache, key: ECKey, server: JwksServer, clock: FakeClock
) -> None:
    await verifier.verify(es256(key, claims()))
    clock.advance(301)
    reset = request_id_var.set("req-refresh-1")
    try:
        await verifier.verify(es256(key, claims()))
    finally:
        request_id_var.reset(reset)
    await settle(cache)
    assert server.count == 2
    assert server.hits[1].headers.get("x-request-id") == "req-refresh-1"


# --------------------------------------------------------------------------- authenticate()


async def test_authenticate_maps_failures_to_401_and_503(
    verifier: TokenVerifier, key: ECKey, server: JwksServer
) -> None:
    principal = await authenticate(verifier, es256(key, claims(roles=["EMPLOYEE"])))
    assert principal == AuthPrincipal(sub="user-42", roles=("EMPLOYEE",))

    with pytest.raises(Unauthorized) as missing:
        await authenticate(verifier, None)
    assert missing.value.headers == {"WWW-Authenticate": "Bearer"}

    for bad in ("", "not.a.jwt", _alg_none(Ctx(key, key, server))):
        with pytest.raises(Unauthorized) as invalid:
            await authenticate(verifier, bad)
        assert invalid.value.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        assert invalid.value.status == 401


async def test_authenticate_lets_auth_unavailable_through(
    verifier: TokenVerifier, key: ECKey, server: JwksServer
) -> None:
    server.mode = "503"
    with pytest.raises(AuthUnavailable):
        await authenticate(verifier, es256(key, claims()))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer   abc.def.ghi  ", "abc.def.ghi"),
        ("Bearer", ""),
        ("Basic dXNlcjpwYXNz", None),
        ("Token abc", None),
        ("Bearerabc", None),
    ],
)
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


# --------------------------------------------------------------------------- development key


async def test_development_key_is_made_once_private_and_mints_verifiable_tokens(
    tmp_path: Path,
) -> None:
    var = tmp_path / "var"
    key = load_or_create_key(var)
    path = var / "dev-signing-key.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert list(var.iterdir()) == [path]  # no temporary file left behind
    again = load_or_create_key(var)
    assert again.kid == key.kid
    assert again.as_dict(private=False) == key.as_dict(private=False)
    published = public_jwks(key)
    assert all("d" not in k for k in published["keys"])
    assert published["keys"][0]["alg"] == "ES256"

    verifier = TokenVerifier(StaticKeys({key.kid: key}), issuer=ISSUER, audience=AUDIENCE)
    token = mint_token(key, sub="dev", roles=["OWNER"], issuer=ISSUER, audience=AUDIENCE)
    verified = await verifier.verify(token)
    assert (verified.sub, verified.roles) == ("dev", ("OWNER",))
    role_only = mint_token(key, sub="dev", roles=[], extra={"role": "CASHIER"})
    assert "roles" not in jwt.decode(role_only, key).claims
    assert (await TokenVerifier(StaticKeys({key.kid: key})).verify(role_only)).roles == ("CASHIER",)
    expired = mint_token(key, sub="dev", roles=["OWNER"], ttl=-60)
    with pytest.raises(InvalidToken):
        await TokenVerifier(StaticKeys({key.kid: key})).verify(expired)
    other = ECKey.generate_key("P-256", auto_kid=True)
    with pytest.raises(InvalidToken):
        await verifier.verify(
            mint_token(other, sub="dev", roles=["OWNER"], issuer=ISSUER, audience=AUDIENCE)
        )


async def test_static_keys_refuse_unknown_kids(key: ECKey, attacker: ECKey) -> None:
    static = TokenVerifier(StaticKeys({key.kid: key}))
    assert (await static.verify(es256(key, claims()))).sub == "user-42"
    with pytest.raises(InvalidToken):
        await static.verify(es256(attacker, claims()))
    with pytest.raises(InvalidToken):
        await static.verify(es256(attacker, claims(), kid=key.kid))
