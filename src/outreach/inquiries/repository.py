"""Inquiry storage: a Core INSERT for the public hot path, ORM queries for the admin side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    LargeBinary,
    String,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.db.base import get_row, table_of
from outreach.db.batch import Grouped, unnest_insert
from outreach.db.fast import FastConn, FastDB, Row
from outreach.db.listing import ListQuery, fetch_page
from outreach.inquiries.models import Inquiry, InquiryStatus
from outreach.jobs import job_insert

_t = table_of(Inquiry)
COLUMNS = tuple(c.name for c in _t.columns)
INSERT = insert(_t).values({name: bindparam(name) for name in COLUMNS})

# `inquiry.sent` fans out as a job (jobs/), queued by the submit's own statement: a SENT
# inquiry's job is committed with it or not at all. Only while a webhook endpoint listens
# for it (a read of that small table inside the statement, so an endpoint made on any
# replica counts at once); the webhooks domain handles the job.
SENT_EVENT = "inquiry.sent"
_LISTENED = {
    "postgresql": text(
        "EXISTS (SELECT 1 FROM webhook_endpoints WHERE active AND deleted_at IS NULL"
        " AND events::jsonb ? 'inquiry.sent')"
    ),
    "sqlite": text(
        "EXISTS (SELECT 1 FROM webhook_endpoints, json_each(webhook_endpoints.events) AS e"
        " WHERE webhook_endpoints.active AND webhook_endpoints.deleted_at IS NULL"
        " AND e.value = 'inquiry.sent')"
    ),
}


def _with_fan_out(written: Any) -> Any:
    """PostgreSQL: `written` (an INSERT of inquiries) in a CTE, and the job of each SENT
    row it wrote queued by the same statement."""
    rows = written.returning(_t.c.id, _t.c.status).cte("written")
    payload = func.convert_to(
        func.json_build_object(literal("inquiryId"), cast(rows.c.id, String)).cast(String),
        literal("UTF8"),
    )
    where = and_(rows.c.status == InquiryStatus.SENT.value, _LISTENED["postgresql"])
    return job_insert("postgresql", SENT_EVENT, payload, source=rows, where=where).add_cte(rows)


def _sqlite_fan_out() -> Any:
    """SQLite has no data-modifying CTE: the job is queued after the row, in its transaction."""
    payload = cast(func.json_object(literal("inquiryId"), cast(_t.c.id, String)), LargeBinary)
    where = and_(
        _t.c.id == bindparam("id"),
        _t.c.status == InquiryStatus.SENT.value,
        _LISTENED["sqlite"],
    )
    return job_insert("sqlite", SENT_EVENT, payload, source=_t, where=where)


# Group commit on PostgreSQL (db/batch.py): a burst of submits is one INSERT (and its jobs).
INSERT_GROUPED = {
    "postgresql": Grouped(_with_fan_out(INSERT), _with_fan_out(unnest_insert(_t))),
    "sqlite": Grouped(INSERT, also=(_sqlite_fan_out(),)),
}


async def insert_row(conn: FastConn, dialect: str, row: dict[str, Any]) -> None:
    await conn.execute_grouped(INSERT_GROUPED[dialect], row)


async def get(
    session: AsyncSession, inquiry_id: int, *, include_deleted: bool = False, lock: bool = False
) -> Inquiry | None:
    return await get_row(session, Inquiry, inquiry_id, include_deleted=include_deleted, lock=lock)


async def get_many_live(session: AsyncSession, ids: Sequence[int]) -> list[Inquiry]:
    stmt = (
        select(Inquiry).where(Inquiry.id.in_(ids), Inquiry.deleted_at.is_(None)).with_for_update()
    )
    return list((await session.scalars(stmt)).all())


async def page(
    db: FastDB,
    query: ListQuery,
    *,
    statuses: Sequence[InquiryStatus] | None,
    email: str | None,
) -> tuple[list[Row], str | None, int]:
    return await fetch_page(
        db,
        _t,
        COLUMNS,
        query,
        statuses=[s.value for s in statuses] if statuses else None,
        email=email.strip().lower() if email else None,
    )
