"""Who is calling: the verified bearer token of an admin request."""

from __future__ import annotations

from dataclasses import dataclass, field

from outreach.auth.jwks import InvalidToken, TokenVerifier, unauthorized


@dataclass(frozen=True, slots=True)
class AuthPrincipal:
    sub: str
    roles: tuple[str, ...]
    # The token's `exp` (Unix seconds), for what outlives one request: a Socket.IO session is
    # ended then (realtime/server.py). When, not who: equality ignores it.
    expires_at: float | None = field(default=None, compare=False)


def bearer_token(authorization: str | None) -> str | None:
    """The bearer token of an Authorization header: None when there is none (no header, or
    another scheme such as Basic: RFC 6750 section 3.1 answers those with a bare
    `WWW-Authenticate: Bearer`), "" for a malformed `Bearer` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


async def authenticate(verifier: TokenVerifier, token: str | None) -> AuthPrincipal:
    """Verify a token (HTTP and Socket.IO share this); raises Unauthorized or AuthUnavailable."""
    if token is None:
        raise unauthorized("missing", token_given=False)
    if not token:
        raise unauthorized("malformed authorization header", token_given=True)
    try:
        verified = await verifier.verify(token)
    except InvalidToken as exc:
        raise unauthorized(str(exc), token_given=True) from None
    exp = verified.claims.get("exp")
    expires_at = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    return AuthPrincipal(sub=verified.sub, roles=verified.roles, expires_at=expires_at)
