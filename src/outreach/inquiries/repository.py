"""Inquiry storage: a Core INSERT for the public hot path, ORM queries for the admin side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.core.fastdb import FastConn, Grouped, unnest_insert
from outreach.core.listing import ListQuery, common_filters, counted_total, keyset_page
from outreach.db import table_of
from outreach.inquiries.models import Inquiry, InquiryStatus

_t = table_of(Inquiry)
COLUMNS = tuple(c.name for c in _t.columns)
INSERT = insert(_t).values({name: bindparam(name) for name in COLUMNS})
# Group commit on PostgreSQL (core/fastdb.py): a burst of submits is one INSERT.
INSERT_GROUPED = Grouped(INSERT, unnest_insert(_t))


async def insert_row(conn: FastConn, row: dict[str, Any]) -> None:
    await conn.execute_grouped(INSERT_GROUPED, row)


async def get(
    session: AsyncSession, inquiry_id: int, *, include_deleted: bool = False, lock: bool = False
) -> Inquiry | None:
    stmt = select(Inquiry).where(Inquiry.id == inquiry_id)
    if not include_deleted:
        stmt = stmt.where(Inquiry.deleted_at.is_(None))
    if lock:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def get_many_live(session: AsyncSession, ids: Sequence[int]) -> list[Inquiry]:
    stmt = (
        select(Inquiry).where(Inquiry.id.in_(ids), Inquiry.deleted_at.is_(None)).with_for_update()
    )
    return list((await session.scalars(stmt)).all())


async def page(
    session: AsyncSession,
    query: ListQuery,
    *,
    statuses: Sequence[InquiryStatus] | None,
    email: str | None,
) -> tuple[list[Inquiry], str | None, int]:
    where: list[ColumnElement[bool]] = common_filters(Inquiry, query)
    names = [s.value for s in statuses] if statuses else None
    if names:
        where.append(Inquiry.status.in_(names))
    total = None
    if email:
        where.append(Inquiry.email == email.strip().lower())
    else:
        total = await counted_total(session, "inquiries", names, query)
    return await keyset_page(session, Inquiry, where, query, total=total)
