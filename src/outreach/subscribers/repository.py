"""Subscriber storage: Core statements for the public hot paths, ORM for the admin side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.db.base import get_row, table_of
from outreach.db.batch import Grouped, unnest_insert
from outreach.db.fast import FastConn, FastDB, Row
from outreach.db.listing import ListQuery, fetch_page, list_filter, rows_statement
from outreach.subscribers.models import Subscriber, SubscriberStatus, subscribed, unsubscribed

_t = table_of(Subscriber)
COLUMNS = tuple(c.name for c in _t.columns)
PUBLIC_COLUMNS = tuple(c for c in _t.columns if c.name != "legacy_token_hash")
PUBLIC_NAMES = tuple(c.name for c in PUBLIC_COLUMNS)
_SUBSCRIBED = tuple(subscribed(None))  # the columns a subscription writes


def _upsert(stmt: Any) -> Any:
    """New: inserted ACTIVE. UNSUBSCRIBED: back to ACTIVE with the new row's subscription
    values (models.subscribed: a new selector, so the old token dies). ACTIVE: the WHERE
    leaves it untouched and nothing is returned."""
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=["email"],
        index_where=_t.c.deleted_at.is_(None),
        set_={
            **{name: new[name] for name in _SUBSCRIBED},
            # A resubscribe keeps the old name and source unless new ones are given (and its
            # search text with them: the email is the same).
            "name": func.coalesce(new.name, _t.c.name),
            "source": func.coalesce(new.source, _t.c.source),
            "search_text": case((new.name.is_(None), _t.c.search_text), else_=new.search_text),
        },
        where=_t.c.status == SubscriberStatus.UNSUBSCRIBED.value,
    ).returning(*PUBLIC_COLUMNS)


def _one_row(insert: Any) -> Any:
    return _upsert(insert(_t).values({name: bindparam(name) for name in COLUMNS}))


# Group commit on PostgreSQL (db/batch.py): each request finds its row by its new selector.
SUBSCRIBE = {
    "postgresql": Grouped(
        _one_row(postgresql.insert),
        _upsert(unnest_insert(_t)),
        match="unsubscribe_selector",
        distinct="email",
    ),
    "sqlite": Grouped(_one_row(sqlite.insert)),
}
FIND_BY_SELECTOR = select(_t.c.id, _t.c.legacy_token_hash, _t.c.status).where(
    _t.c.unsubscribe_selector == bindparam("selector"), _t.c.deleted_at.is_(None)
)
UNSUBSCRIBE = (
    update(_t)
    .where(
        _t.c.id == bindparam("sid"),
        _t.c.status == SubscriberStatus.ACTIVE.value,
        _t.c.deleted_at.is_(None),
    )
    .values(unsubscribed(bindparam("now")))
    .returning(*PUBLIC_COLUMNS)
)


async def subscribe(conn: FastConn, dialect: str, row: dict[str, Any]) -> Row | None:
    """The subscriber when it became ACTIVE (new or back); None when it already was."""
    return await conn.fetch_grouped(SUBSCRIBE[dialect], row)


async def find_by_selector(db: FastDB, selector: str) -> Row | None:
    return await db.fetchrow(FIND_BY_SELECTOR, {"selector": selector})


async def unsubscribe(db: FastDB, subscriber_id: int, now: Any) -> Row | None:
    return await db.fetchrow(UNSUBSCRIBE, {"sid": subscriber_id, "now": now})


async def get(
    session: AsyncSession, subscriber_id: int, *, include_deleted: bool = False, lock: bool = False
) -> Subscriber | None:
    return await get_row(
        session, Subscriber, subscriber_id, include_deleted=include_deleted, lock=lock
    )


async def live_email_taken(
    session: AsyncSession, email: str, *, other_than: int | None = None
) -> bool:
    stmt = select(Subscriber.id).where(Subscriber.email == email, Subscriber.deleted_at.is_(None))
    if other_than is not None:
        stmt = stmt.where(Subscriber.id != other_than)
    return (await session.scalars(stmt.limit(1))).first() is not None


async def page(
    db: FastDB, query: ListQuery, statuses: Sequence[SubscriberStatus] | None
) -> tuple[list[Row], str | None, int]:
    names = [s.value for s in statuses] if statuses else None
    return await fetch_page(db, _t, PUBLIC_NAMES, query, statuses=names, counted=True)


EXPORT_COLUMNS = (
    "id",
    "email",
    "name",
    "status",
    "source",
    "subscribed_at",
    "unsubscribed_at",
    "unsubscribe_selector",
)


def export_query(
    dialect: str, query: ListQuery, statuses: Sequence[SubscriberStatus] | None
) -> tuple[Select[Any], dict[str, Any]]:
    """Every row the list with the same filters shows, with the selector of its link."""
    names = [s.value for s in statuses] if statuses else None
    shape, params = list_filter(dialect, query, statuses=names)
    return rows_statement(_t, EXPORT_COLUMNS, shape), params
