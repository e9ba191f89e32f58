"""Unsubscribe tokens: a random selector is stored, the rest is derived under TOKEN_SECRET.

See docs/adr/0002-unsubscribe-tokens.md. A token is `selector + MAC`, where MAC is
HMAC-SHA256(secret, "unsubscribe:" + selector) in unpadded base64url. The database holds
only the selector (indexed, it finds the row), so a dump or a backup cannot make a working
link; the export can, because it holds the secret. Tokens issued before migration 0007 were
stored whole: only their SHA-256 is kept (`legacy_token_hash`), so old links keep working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from outreach.config import ConfigError, Settings

SELECTOR_BYTES = 16  # 128 bits: 22 base64url characters
MAC_LENGTH = 43  # 32 bytes of HMAC-SHA256, base64url without padding
# Before 0007: 32 random bytes (43 characters) whose first 16 characters were the selector.
LEGACY_LENGTH = 43
LEGACY_SELECTOR_LENGTH = 16
MAX_SELECTOR_LENGTH = 32  # the column's width
# Domain separation: confirm tokens (API.md section 12) use the same secret, another prefix.
UNSUBSCRIBE = b"unsubscribe:"
CONFIRM = b"confirm:"
LOCAL_SECRET_FILE = "token-secret"
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def new_selector() -> str:
    return secrets.token_urlsafe(SELECTOR_BYTES)


def _mac(secret: bytes, purpose: bytes, selector: str) -> str:
    digest = hmac.new(secret, purpose + selector.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(
    token_secrets: Sequence[bytes], selector: str, *, purpose: bytes = UNSUBSCRIBE
) -> str:
    """The token of `selector`, made with the first secret."""
    return selector + _mac(token_secrets[0], purpose, selector)


def mac_matches(
    token_secrets: Sequence[bytes], selector: str, token: str, *, purpose: bytes = UNSUBSCRIBE
) -> bool:
    """Whether `token` is `selector` and its MAC under one of the secrets."""
    if token[: len(selector)] != selector:  # the row was found by this prefix: never here
        return False
    given = token[len(selector) :].encode()
    # Every secret is tried, even after a match: the time taken does not tell which one.
    valid = False
    for secret in token_secrets:
        valid |= hmac.compare_digest(_mac(secret, purpose, selector).encode(), given)
    return valid


def selector_of(token: str) -> str | None:
    """The selector a token names (a legacy token's first characters), or None when the
    token cannot be one: checked before any database work."""
    if not _ALPHABET.issuperset(token):
        return None
    if len(token) == LEGACY_LENGTH:
        return token[:LEGACY_SELECTOR_LENGTH]
    if LEGACY_SELECTOR_LENGTH <= len(token) - MAC_LENGTH <= MAX_SELECTOR_LENGTH:
        return token[:-MAC_LENGTH]
    return None


def is_valid(
    token_secrets: Sequence[bytes], selector: str, legacy_hash: str | None, token: str
) -> bool:
    """Whether the unsubscribe `token` opens the row holding `selector` and `legacy_hash`."""
    if len(token) == LEGACY_LENGTH:
        return legacy_hash is not None and hmac.compare_digest(
            legacy_hash.encode(), legacy_token_hash(token).encode()
        )
    return mac_matches(token_secrets, selector, token)


def legacy_token_hash(token: str) -> str:
    """SHA-256 (hex) of a pre-0007 token, as migration 0007 stored it."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_secrets(settings: Settings) -> list[bytes]:
    """TOKEN_SECRET's secrets (the first makes); outside production without it, the local
    secret under VAR_DIR, so links made by `make run` survive restarts."""
    configured = settings.token_secrets
    if configured:
        return configured
    if settings.production:  # check_production refuses this at start already
        raise ConfigError("APP_ENV=production needs TOKEN_SECRET")
    return [local_secret(settings.var_dir)]


@lru_cache(maxsize=8)
def local_secret(var_dir: Path) -> bytes:
    """VAR_DIR/token-secret: 32 random bytes in base64, made once with mode 0600."""
    path = var_dir / LOCAL_SECRET_FILE
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        # A temporary name, then a link that fails if another process won: one secret each.
        tmp = path.with_name(f"{LOCAL_SECRET_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_bytes().strip()
    if len(secret) < 32:  # an emptied or truncated file must not become a guessable key
        raise ConfigError(f"{path} holds no usable secret: delete it to make a new one")
    return secret
