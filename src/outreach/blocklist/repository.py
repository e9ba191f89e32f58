"""Blocklist storage: the admin routes' ORM writes, and its pages on the fast path."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.blocklist.models import BlockKind, BlocklistEntry
from outreach.db.base import table_of
from outreach.db.fast import FastDB, Row
from outreach.db.listing import ListQuery, fetch_page

_t = table_of(BlocklistEntry)
COLUMNS = tuple(c.name for c in _t.columns)


async def page(
    db: FastDB, query: ListQuery, kinds: Sequence[BlockKind] | None
) -> tuple[list[Row], str | None, int]:
    return await fetch_page(
        db,
        _t,
        COLUMNS,
        query,
        statuses=[k.value for k in kinds] if kinds else None,
        status_column="kind",
        search_column="value",
        soft_delete=False,
    )


async def get(session: AsyncSession, entry_id: int) -> BlocklistEntry | None:
    return await session.get(BlocklistEntry, entry_id)


async def existing(session: AsyncSession, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (kind, value) pairs are listed already."""
    if not pairs:
        return set()
    stmt = select(BlocklistEntry.kind, BlocklistEntry.value).where(
        tuple_(BlocklistEntry.kind, BlocklistEntry.value).in_(list(pairs))
    )
    return {(kind, value) for kind, value in (await session.execute(stmt)).all()}
