"""Inquiry storage: a Core INSERT for the public hot path, ORM queries for the admin side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.db.base import get_row, table_of
from outreach.db.batch import Grouped, unnest_insert
from outreach.db.fast import FastConn, FastDB, Row
from outreach.db.listing import ListQuery, fetch_page
from outreach.inquiries.models import Inquiry, InquiryStatus

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
) -> tuple[list[Row], str | None, int]:
    return await fetch_page(
        db,
        _t,
        COLUMNS,
        query,
        statuses=[s.value for s in statuses] if statuses else None,
        email=email.strip().lower() if email else None,
        counted=True,
        spam=spam,
    )
