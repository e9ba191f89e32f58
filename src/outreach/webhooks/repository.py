"""Webhook storage, on the ORM session of the admin routes and of the delivery worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.core.schemas import decode_cursor, encode_cursor
from outreach.db.base import get_row, table_of
from outreach.db.listing import ListQuery
from outreach.webhooks.models import (
    DeliveryStatus,
    MessageState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)

_endpoints = table_of(WebhookEndpoint)
_messages = table_of(WebhookMessage)
_deliveries = table_of(WebhookDelivery)


async def get(
    session: AsyncSession, endpoint_id: int, *, lock: bool = False
) -> WebhookEndpoint | None:
    return await get_row(session, WebhookEndpoint, endpoint_id, lock=lock)


async def _page(
    session: AsyncSession, stmt: Select[Any], where: list[ColumnElement[bool]], query: ListQuery
) -> tuple[list[Any], str | None, int]:
    """Keyset page by id (newest first unless asc), its next cursor, and the total. Few
    rows per endpoint are expected: the total is a plain count."""
    id_column = stmt.selected_columns.id
    total = await session.scalar(select(func.count()).select_from(stmt.where(*where).subquery()))
    if query.cursor is not None:
        after = decode_cursor(query.cursor, query.order)
        where = [*where, id_column > after if query.order == "asc" else id_column < after]
    ordered = id_column.asc() if query.order == "asc" else id_column.desc()
    rows = list(
        (
            await session.execute(stmt.where(*where).order_by(ordered).limit(query.limit + 1))
        ).mappings()
    )
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        next_cursor = encode_cursor(int(rows[-1]["id"]), query.order)
    return rows, next_cursor, int(total or 0)


async def page(session: AsyncSession, query: ListQuery) -> tuple[list[Any], str | None, int]:
    return await _page(session, select(_endpoints), [_endpoints.c.deleted_at.is_(None)], query)


async def deliveries_page(
    session: AsyncSession, endpoint_id: int, query: ListQuery
) -> tuple[list[Any], str | None, int]:
    return await _page(
        session, select(_deliveries), [_deliveries.c.endpoint_id == endpoint_id], query
    )


_ACTIVE = select(_endpoints.c.id, _endpoints.c.events).where(
    _endpoints.c.deleted_at.is_(None), _endpoints.c.active.is_(True)
)


async def active_endpoints(session: AsyncSession) -> list[tuple[int, list[str]]]:
    """Every active, live endpoint and its events (a handful: matched in Python, so the
    JSON column needs no dialect-specific operator)."""
    return [(row.id, list(row.events)) for row in await session.execute(_ACTIVE)]


async def add_message(
    session: AsyncSession,
    message_id: int,
    delivery_id: int,
    endpoint_id: int,
    event: str,
    body: str,
    now: datetime,
    source: str | None = None,
) -> bool:
    """A queued message and its `pending` first attempt in the deliveries log; False (and
    nothing written) when the endpoint has a message of this `source` already."""
    values = {
        "id": message_id,
        "endpoint_id": endpoint_id,
        "event": event,
        "body": body,
        "state": MessageState.QUEUED.value,
        "attempts": 0,
        "created_at": now,
        "source": source,
    }
    if source is None:
        await session.execute(insert(_messages).values(values))
    else:
        # ON CONFLICT DO NOTHING on the (endpoint_id, source) unique index, both dialects.
        upsert = (
            postgresql.insert(_messages)
            if session.get_bind().dialect.name == "postgresql"
            else sqlite.insert(_messages)
        )
        stmt = (
            upsert.values(values)
            .on_conflict_do_nothing(index_elements=["endpoint_id", "source"])
            .returning(_messages.c.id)
        )
        if (await session.execute(stmt)).first() is None:
            return False
    await session.execute(
        insert(_deliveries).values(
            id=delivery_id,
            endpoint_id=endpoint_id,
            message_id=message_id,
            event=event,
            attempt=1,
            status=DeliveryStatus.PENDING.value,
            at=now,
        )
    )
    return True


async def message_to_deliver(
    session: AsyncSession, message_id: int
) -> tuple[WebhookMessage, WebhookEndpoint] | None:
    found = (
        await session.execute(
            select(WebhookMessage, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
            .where(WebhookMessage.id == message_id)
        )
    ).first()
    return (found[0], found[1]) if found is not None else None


async def settle_message(
    session: AsyncSession, message_id: int, *, attempts: int, state: MessageState
) -> None:
    values: dict[str, Any] = {"attempts": attempts, "state": state.value}
    if state != MessageState.QUEUED:
        values["body"] = None  # nothing needs it after the last attempt
    # Still queued only: a message dropped meanwhile (its endpoint deleted) stays dropped.
    await session.execute(
        update(_messages)
        .where(_messages.c.id == message_id, _messages.c.state == MessageState.QUEUED.value)
        .values(values)
    )


async def record_attempt(session: AsyncSession, values: dict[str, Any]) -> None:
    """Attempt 1 fills in the `pending` row; a retry is a row of its own."""
    if values["attempt"] == 1:
        done = await session.execute(
            update(_deliveries)
            .where(
                _deliveries.c.message_id == values["message_id"],
                _deliveries.c.attempt == 1,
            )
            .values({k: v for k, v in values.items() if k != "id"})
        )
        if done.rowcount:  # type: ignore[attr-defined]
            return
    session.add(WebhookDelivery(**values))
    await session.flush()


_CHUNK = 10_000


async def drop_queued(
    session: AsyncSession, endpoint_id: int, now: datetime, why: str, *, only: int | None = None
) -> list[int]:
    """The endpoint's messages still queued (or just `only` that one) become `dropped`, and
    their pending first attempts `failed` with `why`, so the log shows no attempt waiting
    that will never be made; their ids."""
    where = [
        _messages.c.endpoint_id == endpoint_id,
        _messages.c.state == MessageState.QUEUED.value,
    ]
    if only is not None:
        where.append(_messages.c.id == only)
    dropped = list(
        await session.scalars(
            update(_messages)
            .where(*where)
            .values(state=MessageState.DROPPED.value, body=None)
            .returning(_messages.c.id)
        )
    )
    # Their pending first attempts, by id in chunks: a backlog can hold more ids than a
    # statement may bind (32,767 on asyncpg, 32,766 on SQLite).
    for at in range(0, len(dropped), _CHUNK):
        await session.execute(
            update(_deliveries)
            .where(
                _deliveries.c.message_id.in_(dropped[at : at + _CHUNK]),
                _deliveries.c.status == DeliveryStatus.PENDING.value,
            )
            .values(status=DeliveryStatus.FAILED.value, error=why, at=now)
        )
    return dropped


async def mark_succeeded(session: AsyncSession, endpoint_id: int) -> None:
    await session.execute(
        update(_endpoints)
        .where(_endpoints.c.id == endpoint_id, _endpoints.c.failing_since.is_not(None))
        .values(failing_since=None)
    )


async def mark_failed(
    session: AsyncSession, endpoint_id: int, now: datetime, disable_before: datetime, reason: str
) -> bool:
    """Start (or continue) the endpoint's run of failures; True when that run began before
    `disable_before` and the endpoint was disabled now."""
    await session.execute(
        update(_endpoints)
        .where(_endpoints.c.id == endpoint_id, _endpoints.c.failing_since.is_(None))
        .values(failing_since=now)
    )
    disabled = await session.execute(
        update(_endpoints)
        .where(
            _endpoints.c.id == endpoint_id,
            _endpoints.c.active.is_(True),
            _endpoints.c.failing_since <= disable_before,
        )
        .values(active=False, disabled_reason=reason, updated_at=now)
    )
    return bool(disabled.rowcount)  # type: ignore[attr-defined]
