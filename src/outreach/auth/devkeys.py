"""The local development signing key (no JWKS_URL outside production) and `outreach dev-token`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey

KEY_FILE = "dev-signing-key.json"


def load_or_create_key(var_dir: Path) -> ECKey:
    path = var_dir / KEY_FILE
    if path.exists():
        return ECKey.import_key(orjson.loads(path.read_bytes()))
    var_dir.mkdir(parents=True, exist_ok=True)
    key = ECKey.generate_key("P-256", auto_kid=True)
    data = key.as_dict(private=True)
    data["alg"] = "ES256"
    data["use"] = "sig"
    # Written 0600 via a temporary name, then renamed, so two starting processes agree on one key.
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(data))
    try:
        os.link(tmp, path)  # fails if another process won the race: use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return ECKey.import_key(orjson.loads(path.read_bytes()))


def public_jwks(key: ECKey) -> dict[str, Any]:
    public = key.as_dict(private=False)
    public["alg"] = "ES256"
    public["use"] = "sig"
    return {"keys": [public]}


def mint_token(
    key: ECKey,
    *,
    sub: str,
    roles: list[str],
    ttl: int = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl}
    if roles:  # no empty `roles` list: a token may carry its role as the `role` string alone
        claims["roles"] = roles
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    claims.update(extra or {})
    header = {"alg": "ES256", "typ": "JWT", "kid": key.kid}
    return jwt.encode(header, claims, key, algorithms=["ES256"])
