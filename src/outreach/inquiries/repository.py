"""Inquiry storage: a Core INSERT for the public hot path, ORM queries for the admin side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.db.base import get_row, table_of
from outreach.db.batch import Grouped, unnest_insert
from outreach.db.fast import FastConn, FastDB, Row
from outreach.db.listing import ListQuery, fetch_children, fetch_page
from outreach.inquiries.models import (
    Inquiry,
    InquiryComment,
    InquiryHistory,
    InquiryStatus,
    Priority,
)

_t = table_of(Inquiry)
COLUMNS = tuple(c.name for c in _t.columns)
INSERT = insert(_t).values({name: bindparam(name) for name in COLUMNS})
# Group commit on PostgreSQL (db/batch.py): a burst of submits is one INSERT.
INSERT_GROUPED = {"postgresql": Grouped(INSERT, unnest_insert(_t)), "sqlite": Grouped(INSERT)}


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
