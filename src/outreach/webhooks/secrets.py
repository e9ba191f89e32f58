"""Webhook signing secrets: made, sealed at rest under TOKEN_SECRET, and used to sign.

A secret is `whsec_` + base64 of 32 random bytes (Standard Webhooks' format), shown to the
caller once. The database keeps it sealed with AES-256-GCM under a key derived (HKDF-SHA256)
from TOKEN_SECRET, bound to its endpoint's id, so a dump or backup of the database alone
cannot sign a message (docs/adr/0010). TOKEN_SECRET is a comma list: the first secret's
key seals, every one's key is tried to open. Signatures are made by the `standardwebhooks`
package, the reference implementation receivers verify with.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from standardwebhooks import Webhook

PREFIX = "whsec_"
SECRET_BYTES = 32
SEALED_PREFIX = "v1."
_INFO = b"outreach webhook secrets v1"  # domain separation from the token MACs


class SecretUnavailable(Exception):
    """A sealed secret that no key of TOKEN_SECRET opens (the secret was changed)."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@lru_cache(maxsize=16)
def _keys(token_secrets: tuple[bytes, ...]) -> tuple[AESGCM, ...]:
    return tuple(
        AESGCM(HKDF(algorithm=SHA256(), length=32, salt=None, info=_INFO).derive(secret))
        for secret in token_secrets
    )


def _aad(endpoint_id: int) -> bytes:
    # Bound to its row: a sealed secret copied onto another endpoint does not open.
    return b"webhook-endpoint:%d" % endpoint_id


def seal(token_secrets: Sequence[bytes], endpoint_id: int, secret: str) -> str:
    nonce = os.urandom(12)
    sealed = _keys(tuple(token_secrets))[0].encrypt(nonce, secret.encode(), _aad(endpoint_id))
    return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(token_secrets: Sequence[bytes], endpoint_id: int, sealed: str) -> str:
    if not sealed.startswith(SEALED_PREFIX):
        raise SecretUnavailable("not a sealed secret")
    raw = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX) :])
    for key in _keys(tuple(token_secrets)):
        try:
            return key.decrypt(raw[:12], raw[12:], _aad(endpoint_id)).decode()
        except InvalidTag:
            continue
    raise SecretUnavailable("no key of TOKEN_SECRET opens the webhook secret")


def signature_header(signing: Sequence[str], message_id: str, at: datetime, body: str) -> str:
    """`webhook-signature`: one `v1,<base64>` per signing secret, space-separated."""
    return " ".join(Webhook(secret).sign(message_id, at, body) for secret in signing)
