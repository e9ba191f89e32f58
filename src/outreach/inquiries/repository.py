"""Inquiry storage: a Core INSERT for the public hot path, ORM queries for the admin side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import LargeBinary, bindparam, insert, select
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
# Group commit on PostgreSQL (db/batch.py): a burst of submits is one INSERT.
INSERT_GROUPED = {"postgresql": Grouped(INSERT, unnest_insert(_t)), "sqlite": Grouped(INSERT)}

# The job a stored SENT inquiry causes (inquiries/jobs.py: its mails, later its webhooks),
# queued by the same statement as the row: one round trip, one commit, and the burst's
# single statement fires pgqueuer's wake-up trigger once. `job_payload` is its JSON.
SENT_JOB = "inquiry.sent"
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
