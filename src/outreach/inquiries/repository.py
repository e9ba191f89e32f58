"""Inquiry storage: a Core INSERT for the public hot path, ORM queries for the admin side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
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
from outreach.db.batch import Grouped, unnest_insert, unnest_rows
from outreach.db.fast import FastConn, FastDB, Row
from outreach.db.listing import ListQuery, fetch_children, fetch_page
from outreach.inquiries.models import (
    Inquiry,
    InquiryComment,
    InquiryHistory,
    InquiryStatus,
    Priority,
)
from outreach.jobs import job_insert

_t = table_of(Inquiry)
COLUMNS = tuple(c.name for c in _t.columns)
INSERT = insert(_t).values({name: bindparam(name) for name in COLUMNS})

# The job a stored SENT inquiry causes (inquiries/jobs.py: its mails and its webhooks),
# queued by the same statement as the row: one round trip, one commit, and the burst's
# single statement fires pgqueuer's wake-up trigger once.
SENT_JOB = "inquiry.sent"
# Without mail to send, the job is queued only while a webhook endpoint listens for the
# event: a read of that small table inside the statement, so an endpoint made on any replica
# counts at once, and a service without webhooks queues nothing.
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
    return job_insert("postgresql", SENT_JOB, payload, source=rows, where=where).add_cte(rows)


def _sqlite_fan_out() -> Any:
    """SQLite has no data-modifying CTE: the job is queued after the row, in its transaction."""
    payload = cast(func.json_object(literal("inquiryId"), cast(_t.c.id, String)), LargeBinary)
    where = and_(
        _t.c.id == bindparam("id"),
        _t.c.status == InquiryStatus.SENT.value,
        _LISTENED["sqlite"],
    )
    return job_insert("sqlite", SENT_JOB, payload, source=_t, where=where)


def _with_batch_fan_out(written: Any) -> Any:
    """PostgreSQL, a burst's many-row INSERT: ONE job for the burst's SENT rows (payload
    `{"inquiryIds": [...]}`; none when it has none or nothing listens), so the worker's
    fan-out reads and writes a burst in one transaction instead of a job per inquiry."""
    rows = written.returning(_t.c.id, _t.c.status).cte("written")
    sent = (
        select(func.json_agg(cast(rows.c.id, String)).label("ids"))
        .where(rows.c.status == InquiryStatus.SENT.value, _LISTENED["postgresql"])
        .having(func.count() > 0)
        .cte("sent")
    )
    payload = func.convert_to(
        func.json_build_object(literal("inquiryIds"), sent.c.ids).cast(String), literal("UTF8")
    )
    return job_insert("postgresql", SENT_JOB, payload, source=sent).add_cte(rows)


# Group commit on PostgreSQL (db/batch.py): a burst of submits is one INSERT (and the job
# of the webhooks listening).
INSERT_GROUPED = {
    "postgresql": Grouped(_with_fan_out(INSERT), _with_batch_fan_out(unnest_insert(_t))),
    "sqlite": Grouped(INSERT, also=(_sqlite_fan_out(),)),
}

# With mail to send, every SENT inquiry's job; `job_payload` is its JSON.
_PAYLOAD = bindparam("job_payload", type_=LargeBinary)


def _many_with_job() -> Any:
    rows = unnest_rows(_t, {"job_payload": LargeBinary()})
    stored = insert(_t).from_select(COLUMNS, select(*(rows.c[n] for n in COLUMNS))).cte("ins")
    return job_insert("postgresql", SENT_JOB, rows.c.job_payload, source=rows).add_cte(stored)


INSERT_WITH_JOB = {
    # WITH ins AS (INSERT INTO inquiries ...) INSERT INTO pgqueuer ...: one statement.
    "postgresql": Grouped(
        job_insert("postgresql", SENT_JOB, _PAYLOAD).add_cte(INSERT.cte("ins")),
        _many_with_job(),
    ),
    # SQLite has no data-modifying CTE: the job's INSERT follows in the same transaction.
    "sqlite": Grouped(INSERT, also=(job_insert("sqlite", SENT_JOB, _PAYLOAD),)),
}
GET = select(_t).where(_t.c.id == bindparam("p_id"))
GET_MANY = select(_t).where(_t.c.id.in_(bindparam("p_ids", expanding=True))).order_by(_t.c.id)


async def insert_row(
    conn: FastConn, dialect: str, row: dict[str, Any], *, job_payload: bytes | None = None
) -> None:
    """Store a submitted inquiry; with `job_payload`, queue its `inquiry.sent` job with it."""
    if job_payload is None:
        await conn.execute_grouped(INSERT_GROUPED[dialect], row)
    else:
        await conn.execute_grouped(INSERT_WITH_JOB[dialect], {**row, "job_payload": job_payload})


async def find(db: FastConn, inquiry_id: int) -> Row | None:
    """An inquiry by id, deleted or not (the jobs read what they mail)."""
    return await db.fetchrow(GET, {"p_id": inquiry_id})


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
    spam: bool | None = None,
    assignee: str | None = None,
    priorities: Sequence[Priority] | None = None,
) -> tuple[list[Row], str | None, int]:
    """`assignee`: a sub, or NO_ONE (unassigned); None: no filter."""
    return await fetch_page(
        db,
        _t,
        COLUMNS,
        query,
        statuses=[s.value for s in statuses] if statuses else None,
        email=email.strip().lower() if email else None,
        counted=True,
        spam=spam,
        assignee=assignee,
        priorities=[p.value for p in priorities] if priorities else None,
    )


_comments = table_of(InquiryComment)
_history = table_of(InquiryHistory)


async def comments(
    db: FastDB, inquiry_id: int, query: ListQuery
) -> tuple[list[Row], str | None, int]:
    return await fetch_children(db, _comments, "inquiry_id", inquiry_id, query)


async def history(db: FastDB, inquiry_id: int, query: ListQuery) -> tuple[list[Row], int]:
    """Stored entries of a page (one more than the page, for the derived `created` entry to
    be merged in), and how many are stored."""
    rows, _, total = await fetch_children(db, _history, "inquiry_id", inquiry_id, query, extra=1)
    return rows, total


_ALL_CHANGES = (
    select(_history.c.changes)
    .where(_history.c.inquiry_id == bindparam("parent"))
    .order_by(_history.c.id.asc())
)


async def all_changes(db: FastDB, inquiry_id: int) -> list[dict[str, Any]]:
    """Every stored entry's changes, oldest first (how the inquiry started: service)."""
    rows = await db.fetch(_ALL_CHANGES, {"parent": inquiry_id})
    return [
        r["changes"] if isinstance(r["changes"], dict) else orjson.loads(r["changes"]) for r in rows
    ]
