"""Idempotency-Key for the creating public POSTs (API.md section 4), kept in the database.

A key is claimed in its own committed transaction, so every replica sees it while the first
request still runs (409). The work and the stored answer commit together. A claim left by a
process that died is taken over once it is older than STALE_AFTER.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from outreach.core.errors import IdempotencyInFlight, IdempotencyKeyReused
from outreach.db.base import table_of, utcnow
from outreach.db.fast import FastConn, FastDB
from outreach.idempotency.models import IdempotencyKey

TTL = timedelta(hours=24)
STALE_AFTER = timedelta(seconds=60)

_t = table_of(IdempotencyKey)


def _claim(insert: Any) -> Any:
    return (
        insert(_t)
        .values(
            scope=bindparam("p_scope"),
            key=bindparam("p_key"),
            request_hash=bindparam("p_hash"),
            state="running",
            created_at=bindparam("p_now"),
            expires_at=bindparam("p_expires"),
        )
        .on_conflict_do_nothing(index_elements=["scope", "key"])
        .returning(_t.c.key)
    )


_CLAIM = {"postgresql": _claim(postgresql.insert), "sqlite": _claim(sqlite.insert)}
_WHERE_KEY = (_t.c.scope == bindparam("p_scope")) & (_t.c.key == bindparam("p_key"))
_FIND = select(
    _t.c.request_hash,
    _t.c.state,
    _t.c.response_status,
    _t.c.response_body,
    _t.c.created_at,
    _t.c.expires_at,
).where(_WHERE_KEY)
_TAKE_OVER = (
    update(_t)
    .where(_WHERE_KEY, _t.c.state == "running", _t.c.created_at < bindparam("p_stale"))
    .values(created_at=bindparam("p_now"), request_hash=bindparam("p_hash"))
    .returning(_t.c.key)
)
_DROP_EXPIRED = delete(_t).where(_WHERE_KEY, _t.c.expires_at <= bindparam("p_now"))
_RELEASE = delete(_t).where(_WHERE_KEY, _t.c.state == "running")
_COMPLETE = (
    update(_t)
    .where(_WHERE_KEY)
    .values(state="done", response_status=bindparam("p_status"), response_body=bindparam("p_body"))
)
_PURGE = delete(_t).where(_t.c.expires_at <= bindparam("p_now"))


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """A public POST's answer, and what its work returned (None when replayed)."""

    status: int
    body: bytes
    replayed: bool
    value: T | None = None


def request_hash(payload: Any) -> str:
    """The body as validated, canonically serialized: whitespace and key order do not matter."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


# The work of a request, on its connection: (status, body, a value for the caller).
Work = Callable[[FastConn], Awaitable[tuple[int, bytes, T]]]


async def _claim_key(db: FastDB, scope: str, key: str, digest: str) -> Outcome[Any] | None:
    """None when this request now holds the key; else the answer to give instead."""
    for _ in range(2):
        now = utcnow()
        params = {
            "p_scope": scope,
            "p_key": key,
            "p_hash": digest,
            "p_now": now,
            "p_expires": now + TTL,
        }
        if await db.fetchrow(_CLAIM[db.dialect], params) is not None:
            return None
        row = await db.fetchrow(_FIND, {"p_scope": scope, "p_key": key})
        if row is None:  # released between our two statements: try again
            continue
        if row["expires_at"] <= now:
            await db.execute(_DROP_EXPIRED, {"p_scope": scope, "p_key": key, "p_now": now})
            continue
        if row["request_hash"] != digest:
            raise IdempotencyKeyReused("This Idempotency-Key was used with another body")
        if row["state"] == "done":
            return Outcome(int(row["response_status"]), row["response_body"].encode(), True)
        taken = await db.fetchrow(
            _TAKE_OVER,
            {
                "p_scope": scope,
                "p_key": key,
                "p_now": now,
                "p_hash": digest,
                "p_stale": now - STALE_AFTER,
            },
        )
        if taken is not None:
            return None
        raise IdempotencyInFlight("A request with this Idempotency-Key is still running")
    raise IdempotencyInFlight("A request with this Idempotency-Key is still running")


async def run_once(
    db: FastDB, scope: str, key: str | None, payload: Any, work: Work[T]
) -> Outcome[T]:
    """Run `work` at most once per (scope, key) and body within 24 h, in a transaction with
    the stored answer; without a key its statements autocommit (group commit)."""
    if key is None:
        status, body, value = await work(db)
        return Outcome(status, body, False, value)
    digest = request_hash(payload)
    earlier = await _claim_key(db, scope, key, digest)
    if earlier is not None:
        return earlier
    try:
        async with db.transaction() as conn:
            status, body, value = await work(conn)
            await conn.execute(
                _COMPLETE,
                {"p_scope": scope, "p_key": key, "p_status": status, "p_body": body.decode()},
            )
    except BaseException:
        # Free the key so the client's retry is not refused for a request that stored nothing.
        with contextlib.suppress(Exception):
            await db.execute(_RELEASE, {"p_scope": scope, "p_key": key})
        raise
    return Outcome(status, body, False, value)


async def purge_expired(db: FastDB) -> None:
    await db.execute(_PURGE, {"p_now": utcnow()})
