"""The retention job (API.md section 14): with INQUIRY_RETENTION_DAYS=N, the personal data
of inquiries created more than N days ago is erased, as an erase request does, with
`actorId` null in their history.

It runs on one replica at a time (a PostgreSQL advisory lock; the others skip the run), in
batches of BATCH inquiries, each its own short transaction taking rows with `FOR UPDATE SKIP
LOCKED` (it never waits for a row a request holds, and holds few), until none is left; an
erased inquiry is never taken again (`erased_at`), so a run after a crash only continues.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, func, select, text

from outreach.db.base import utcnow
from outreach.db.fast import AsyncpgDB
from outreach.inquiries.models import Inquiry
from outreach.privacy.service import erase_inquiries
from outreach.state import State

log = structlog.get_logger("outreach.privacy")

BATCH = 500
LOCK_KEY = 0x72657465  # "rete": one retention run in the whole cluster at a time


def _due(cutoff: datetime) -> list[ColumnElement[bool]]:
    return [Inquiry.erased_at.is_(None), Inquiry.created_at < cutoff]


async def due(state: State, days: int, *, now: datetime | None = None) -> int:
    """How many inquiries a run would erase now (`outreach retention --dry-run`)."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    async with state.sessionmaker() as session:
        found = await session.scalar(select(func.count()).select_from(Inquiry).where(*_due(cutoff)))
    return int(found or 0)


async def run(state: State, days: int, *, now: datetime | None = None) -> int:
    """One run: how many inquiries it erased (0 when another replica holds the run)."""
    fastdb = state.fastdb
    if isinstance(fastdb, AsyncpgDB):
        async with fastdb.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                log.info("Retention skipped: another replica runs it")
                return 0
            try:
                return await _batches(state, days, now)
            finally:
                # Session-level: the pool does not reset its connections (db/fast.py).
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return await _batches(state, days, now)


async def _batches(state: State, days: int, now: datetime | None) -> int:
    cutoff = (now or utcnow()) - timedelta(days=days)
    erased = 0
    while True:
        async with state.sessionmaker() as session, session.begin():
            postgres = session.get_bind().dialect.name == "postgresql"
            stmt = select(Inquiry).where(*_due(cutoff)).order_by(Inquiry.created_at).limit(BATCH)
            if postgres:
                await session.execute(text("SET LOCAL lock_timeout = '5s'"))
                stmt = stmt.with_for_update(skip_locked=True)
            batch = list((await session.scalars(stmt)).all())
            await erase_inquiries(session, state, batch, None, utcnow())
        erased += len(batch)
        if len(batch) < BATCH:
            break
    if erased:
        log.info("Retention erased inquiries", inquiries=erased, days=days)
    return erased
