"""Unsubscribe tokens: 256 random bits, looked up by a prefix, compared in constant time.

See docs/adr/0002-unsubscribe-tokens.md. The first SELECTOR_LENGTH characters find the row
through an index; the whole token is then compared with hmac.compare_digest, so response
time does not tell an attacker how much of a guess was right.
"""

from __future__ import annotations

import hmac
import secrets

SELECTOR_LENGTH = 16
TOKEN_BYTES = 32  # 43 URL-safe characters


def new_token() -> tuple[str, str]:
    """(selector, token)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token[:SELECTOR_LENGTH], token


def selector_of(token: str) -> str | None:
    if len(token) != 43 or not token.isascii():
        return None
    return token[:SELECTOR_LENGTH]


def same_token(stored: str, given: str) -> bool:
    return hmac.compare_digest(stored.encode(), given.encode())
