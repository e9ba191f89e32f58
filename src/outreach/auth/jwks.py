"""ES256 JWT verification against the identity service's JWKS, with an async key cache.

The cache fetches with one shared httpx client and never blocks the event loop. Concurrent
requests that miss share one fetch; an unknown `kid` causes at most one refetch per
`min_refetch` seconds; cached keys keep working while the identity service is down.

That interval counts from the last refetch for a `kid` the JWKS did not have, not from any
fetch: counting from the first fetch or a TTL refresh (as PyJWKClient does, LIBRARY-NOTES)
refuses a key rotated just after one for up to `min_refetch` seconds.

The JWKS is untrusted input: a fetch ends within `deadline` seconds in all (the per-phase
`timeout` alone lets a server that drips a byte at a time hold it for minutes), reads at most
`max_bytes` of body, and whatever goes wrong reading or parsing it is a failed fetch, never an
exception in the request.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson
import structlog
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from outreach.core.context import request_id_var
from outreach.core.errors import AuthUnavailable, Unauthorized

ALGORITHMS = ["ES256"]
LEEWAY_SECONDS = 30
MAX_TOKEN_LENGTH = 8192
# Verified tokens remembered: how long at most (a removed key stops working within this), how many.
VERIFIED_TTL = 60.0
VERIFIED_MAX = 4096
# `typ` values of an access token, compared lowercased; RFC 7515 4.1.9 lets "application/" be
# left out. Anything else (an OIDC ID token's "id+jwt", "JOSE", ...) is another kind of token.
ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
# A JWKS of a few keys is a few kB; more than this is a broken or hostile identity service.
JWKS_MAX_BYTES = 256 * 1024
JWKS_DEADLINE = 5.0

log = structlog.get_logger("outreach.auth")


class InvalidToken(Exception):
    """The token is not acceptable; the message is safe to log (never the token)."""


class JwksTooLarge(ValueError):
    """The JWKS answer is (or says it is) over the size limit."""


class JwksEncoded(ValueError):
    """The JWKS answer is compressed although we asked for none: refused, never inflated."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    sub: str
    roles: tuple[str, ...]
    claims: Mapping[str, Any]


class KeyProvider(Protocol):
    async def key_for(self, kid: str | None) -> ECKey: ...

    @property
    def has_keys(self) -> bool: ...


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, read only to choose a key; everything in it is checked again later."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not a compact JWS")
    try:
        header = orjson.loads(_b64decode(parts[0]))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidToken("unreadable header") from None
    if not isinstance(header, dict):
        raise InvalidToken("unreadable header")
    if header.get("alg") not in ALGORITHMS:
        raise InvalidToken(f"algorithm {str(header.get('alg'))[:16]!r} not allowed")
    # Checked before any key lookup: a refused token causes no JWKS fetch and is never cached.
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
        raise InvalidToken(f"typ {str(typ)[:16]!r} not allowed")
    return header


def roles_from(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The roles of `roles` (a list, or one string) together with `role` (a string, or a list).

    Both claims count: a token with `"roles": []` and `"role": "OWNER"` is an OWNER's (taking
    `roles` alone whenever it is present refused such tokens with 403).
    """
    raw: list[Any] = []
    for name in ("roles", "role"):
        value = claims.get(name)
        if isinstance(value, str):
            raw.append(value)
        elif isinstance(value, list):
            raw.extend(value)
    return tuple(dict.fromkeys(r for r in raw if isinstance(r, str) and 0 < len(r) <= 64))


class JwksCache:
    """Keys of one JWKS URL; see the module docstring for the rules."""

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        ttl: float = 300.0,
        min_refetch: float = 30.0,
        timeout: float = 3.0,
        deadline: float = JWKS_DEADLINE,
        max_bytes: int = JWKS_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._client = client
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._timeout = timeout
        self._deadline = deadline
        self._max_bytes = max_bytes
        self._clock = clock
        self._keys: dict[str | None, ECKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None  # start of the last fetch, whatever its cause
        self._unknown_at: float | None = None  # ... of the last one after which a kid was unknown
        self._inflight: asyncio.Task[None] | None = None
        self.fetch_count = 0

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    async def key_for(self, kid: str | None) -> ECKey:
        now = self._clock()
        key = self._lookup(kid)
        if key is not None:
            if self._fetched_at is not None and now - self._fetched_at > self._ttl:
                self._refresh_in_background()
            return key
        if self._may_fetch_for_miss(now):
            await self._fetch_shared()
            key = self._lookup(kid)
            if key is not None:
                return key
            self._unknown_at = self._attempted_at
        if not self._keys:
            raise AuthUnavailable("No signing keys are available from the identity service")
        raise InvalidToken("unknown key id")

    def _lookup(self, kid: str | None) -> ECKey | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _retry_due(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._min_refetch

    def _may_fetch_for_miss(self, now: float) -> bool:
        if self._inflight is not None:
            return True  # join the fetch under way
        if not self._keys:  # first use, or the identity service never gave usable keys
            return self._retry_due(now)
        return self._unknown_at is None or now - self._unknown_at >= self._min_refetch

    def _refresh_in_background(self) -> None:
        if self._inflight is None and self._retry_due(self._clock()):
            self._inflight = asyncio.create_task(self._fetch())
            self._inflight.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved; _fetch logs its own failures

    async def _fetch_shared(self) -> None:
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch())
            self._inflight.add_done_callback(self._done)
        # shield: one caller giving up (client disconnect) must not cancel the others' fetch
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetch_count += 1
        try:
            async with asyncio.timeout(self._deadline):
                body = await self._download()
            # orjson refuses deep nesting with an error (the json module hit RecursionError)
            keys = self._parse(orjson.loads(body))
        except Exception as exc:  # noqa: BLE001 - any failure of this untrusted input
            log.warning("JWKS fetch failed", url=self.url, error=type(exc).__name__)
            return
        if not keys:
            log.warning("JWKS has no usable ES256 keys", url=self.url)
            return
        self._keys = keys
        self._fetched_at = self._clock()
        log.info("JWKS refreshed", url=self.url, keys=len(keys))

    async def _download(self) -> bytes:
        headers = {
            "X-Request-Id": request_id_var.get(),
            "Accept": "application/json",
            # a compressed body could inflate far past max_bytes from one small network read
            "Accept-Encoding": "identity",
        }
        request = self._client.stream("GET", self.url, timeout=self._timeout, headers=headers)
        async with request as response:
            response.raise_for_status()
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise JwksEncoded(response.headers["content-encoding"][:32])
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise JwksTooLarge(declared)  # refused unread
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self._max_bytes:
                    raise JwksTooLarge(f"over {self._max_bytes}")  # leaving closes the connection
        return bytes(body)

    @staticmethod
    def _parse(document: Any) -> dict[str | None, ECKey]:
        keys: dict[str | None, ECKey] = {}
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document")
        for item in document["keys"]:
            if not isinstance(item, dict) or item.get("kty") != "EC" or item.get("crv") != "P-256":
                continue
            if item.get("use", "sig") != "sig" or item.get("alg", "ES256") != "ES256":
                continue
            public = {k: v for k, v in item.items() if k != "d"}
            try:
                keys[item.get("kid")] = ECKey.import_key(public)
            except (JoseError, ValueError, TypeError):
                continue
        return keys


class StaticKeys:
    """A fixed key set: the local development key."""

    def __init__(self, keys: Mapping[str | None, ECKey]) -> None:
        self._keys = dict(keys)

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    async def key_for(self, kid: str | None) -> ECKey:
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise InvalidToken("unknown key id")
        return key


@dataclass
class TokenVerifier:
    keys: KeyProvider
    issuer: str | None = None
    audience: str | None = None
    leeway: int = LEEWAY_SECONDS
    _registry: jwt.JWTClaimsRegistry = field(init=False)
    _verified: dict[str, tuple[VerifiedToken, float]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        options: dict[str, Any] = {"sub": {"essential": True}, "exp": {"essential": True}}
        if self.issuer:
            options["iss"] = {"essential": True, "value": self.issuer}
        if self.audience:
            options["aud"] = {"essential": True, "value": self.audience}
        self._registry = jwt.JWTClaimsRegistry(leeway=self.leeway, **options)

    async def verify(self, token: str) -> VerifiedToken:
        """Verify signature and claims; raises InvalidToken (401) or AuthUnavailable (503).

        A token that verified is remembered until it expires, at most VERIFIED_TTL seconds
        (the staff portal sends the same token with every call; an ES256 check is ~10 % of a
        list request). Failures are never remembered.
        """
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and now < cached[1]:
            return cached[0]
        verified = await self._verify(token)
        exp = verified.claims.get("exp")
        until = min(
            float(exp) + self.leeway if isinstance(exp, int | float) else now, now + VERIFIED_TTL
        )
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (verified, until)
        return verified

    async def _verify(self, token: str) -> VerifiedToken:
        header = unverified_header(token)
        kid = header.get("kid")
        key = await self.keys.key_for(kid if isinstance(kid, str) else None)
        try:
            # jku / x5u / jwk headers are ignored: the key comes only from our own key set.
            decoded = jwt.decode(token, key, algorithms=ALGORITHMS)
            self._registry.validate(decoded.claims)
        except JoseError as exc:
            raise InvalidToken(exc.error or type(exc).__name__) from None
        except (ValueError, TypeError) as exc:
            raise InvalidToken(type(exc).__name__) from None
        claims = decoded.claims
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise InvalidToken("bad sub")
        return VerifiedToken(sub=sub, roles=roles_from(claims), claims=claims)


def unauthorized(reason: str, *, token_given: bool) -> Unauthorized:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"' if token_given else "Bearer"}
    detail = "A valid bearer token is required" if token_given else "No bearer token was given"
    log.info("Token refused", reason=reason)
    return Unauthorized(detail, headers=headers)
