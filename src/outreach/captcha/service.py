"""ALTCHA proof-of-work on the public POSTs (API.md section 10), with the `altcha` package.

A challenge is ALTCHA's v1 format (what the widget solves), HMAC-signed under ALTCHA_HMAC_KEY,
its salt carrying an expiry 10 minutes ahead. A solved one is accepted once across replicas:
spent in Redis (`SET NX` until the salt expires) or, without Redis or while it is down, in
the `captcha_spent` table. A retry of the same request with the same Idempotency-Key may
bring the same solution again: it is let through, for the idempotency layer to replay the
first answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from altcha import v1 as altcha_v1
from redis.asyncio import Redis
from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from outreach.captcha.models import CaptchaSpent
from outreach.config import Settings, local_secret
from outreach.core.errors import ValidationFailed
from outreach.db.base import table_of, utcnow
from outreach.db.fast import FastDB

log = structlog.get_logger("outreach.captcha")

CHALLENGE_TTL = timedelta(minutes=10)
# The work a visitor's browser does: about 0.1-0.5 s on a phone at this size (the widget
# tries numbers 0..maxnumber; the answer is uniform in that range).
MAX_NUMBER = 250_000
MAX_PAYLOAD = 4096
LOCAL_KEY_FILE = "altcha-hmac-key"
REDIS_PREFIX = "outreach:altcha:"


class CaptchaRequired(ValidationFailed):
    slug, title = "captcha-required", "Captcha required"


class CaptchaInvalid(ValidationFailed):
    slug, title = "captcha-invalid", "Captcha invalid"


_t = table_of(CaptchaSpent)


def _spend(insert: Any) -> Any:
    return (
        insert(_t)
        .values(
            challenge=bindparam("challenge"),
            holder=bindparam("holder"),
            expires_at=bindparam("expires_at"),
        )
        .on_conflict_do_nothing(index_elements=["challenge"])
        .returning(_t.c.challenge)
    )


_SPEND = {"postgresql": _spend(postgresql.insert), "sqlite": _spend(sqlite.insert)}
_HOLDER = select(_t.c.holder).where(_t.c.challenge == bindparam("challenge"))
_PURGE = delete(_t).where(_t.c.expires_at <= bindparam("now"))


def hmac_key(settings: Settings) -> bytes:
    """ALTCHA_HMAC_KEY; outside production without it, a local key under VAR_DIR."""
    if settings.altcha_hmac_key is not None and settings.altcha_hmac_key.get_secret_value():
        return settings.altcha_hmac_key.get_secret_value().encode()
    return local_secret(settings.var_dir, LOCAL_KEY_FILE)


class Captcha:
    """Challenges and their one-time verification; `enabled` is CAPTCHA=altcha."""

    def __init__(self, settings: Settings, fastdb: FastDB, redis: Redis | None) -> None:
        self.enabled = settings.captcha == "altcha"
        self._settings = settings
        self._key: bytes | None = None
        self._db = fastdb
        self._redis = redis

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = hmac_key(self._settings)
        return self._key

    def challenge(self) -> dict[str, Any]:
        made = altcha_v1.create_challenge(
            altcha_v1.ChallengeOptions(
                algorithm="SHA-256",
                max_number=MAX_NUMBER,
                hmac_key=self.key,
                expires=datetime.now(UTC) + CHALLENGE_TTL,
            )
        )
        return {
            "algorithm": made.algorithm,
            "challenge": made.challenge,
            "maxnumber": made.max_number,
            "salt": made.salt,
            "signature": made.signature,
        }

    async def check(self, payloads: Sequence[str | None], idempotency_key: str | None) -> None:
        """Raise CaptchaRequired or CaptchaInvalid unless one solved, unspent challenge came
        (the `X-Altcha` header or the body's `altcha` field). Off: nothing is checked."""
        if not self.enabled:
            return
        given = next((p for p in payloads if p), None)
        if given is None:
            raise CaptchaRequired(
                "Solve the captcha: send its payload as X-Altcha or the field altcha",
                errors=[("altcha", "field required")],
            )
        if len(given) > MAX_PAYLOAD:
            raise CaptchaInvalid("The captcha payload is too long", errors=[("altcha", "invalid")])
        payload = _verified(given, self.key)
        if payload is None:
            raise CaptchaInvalid(
                "The captcha was not solved, or it expired", errors=[("altcha", "invalid")]
            )
        expires = _expiry(payload)
        if not await self._spend(payload.challenge, expires, idempotency_key):
            raise CaptchaInvalid(
                "This captcha was already used: solve a new one", errors=[("altcha", "spent")]
            )

    async def _spend(self, challenge: str, expires: datetime, idem: str | None) -> bool:
        """True the first time `challenge` comes, or again with the same Idempotency-Key."""
        holder = hashlib.sha256((idem or "").encode()).hexdigest() if idem else ""
        if self._redis is not None:
            try:
                name = REDIS_PREFIX + challenge
                exat = int(expires.timestamp()) + 1
                if await self._redis.set(name, holder or "-", nx=True, exat=exat):
                    return True
                held = await self._redis.get(name)
                return bool(holder) and held in (holder, holder.encode())
            except Exception as exc:  # noqa: BLE001 - Redis down: the database keeps them
                log.warning("Captcha store unavailable", error=type(exc).__name__)
        params = {"challenge": challenge, "holder": holder, "expires_at": expires}
        if await self._db.fetchrow(_SPEND[self._db.dialect], params) is not None:
            return True
        if not holder:
            return False
        row = await self._db.fetchrow(_HOLDER, {"challenge": challenge})
        return row is not None and row["holder"] == holder

    async def purge(self) -> None:
        await self._db.execute(_PURGE, {"now": utcnow()})


def _verified(given: str, key: bytes) -> Any:
    """The payload when it is a solution of a challenge of ours that has not expired."""
    try:  # untrusted input: anything unreadable (bad base64, JSON, types) is invalid
        payload = altcha_v1.Payload.from_base64(given)
        ok, _ = altcha_v1.verify_solution(payload, key, check_expires=True)
    except Exception:  # noqa: BLE001
        return None
    return payload if ok and isinstance(payload.challenge, str) else None


def _expiry(payload: Any) -> datetime:
    _, expires, _ = payload.parse_salt()
    if expires is None:  # ours always carry one; a payload without was refused by its HMAC
        return utcnow() + CHALLENGE_TTL
    return datetime.fromtimestamp(expires, UTC)
