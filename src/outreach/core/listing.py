"""Keyset pagination over Snowflake ids (time-ordered), newest first unless order=asc."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Query
from sqlalchemy import ColumnElement, column, func, select, table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from outreach.auth.permissions import Authorizer, get_authorizer
from outreach.auth.principal import AuthPrincipal, current_principal
from outreach.core.errors import Forbidden
from outreach.core.schemas import DateOrTime, decode_cursor, encode_cursor, time_bound
from outreach.core.text import like_pattern

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int
    cursor: str | None
    order: str
    include_deleted: bool
    q: str | None
    created_from: datetime | None
    created_to: datetime | None


def common_filters(model: Any, query: ListQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if not query.include_deleted:
        where.append(model.deleted_at.is_(None))
    if query.q:
        where.append(model.search_text.like(like_pattern(query.q), escape="\\"))
    if query.created_from is not None:
        where.append(model.created_at >= query.created_from)
    if query.created_to is not None:
        where.append(model.created_at <= query.created_to)
    return where


# Kept by triggers on PostgreSQL (migration 0002); not a model: SQLite has no such table.
_row_counts = table("row_counts", column("tbl"), column("status"), column("deleted"), column("n"))


async def counted_total(
    session: AsyncSession, table_name: str, statuses: Sequence[str] | None, query: ListQuery
) -> int | None:
    """The total from the trigger-kept counters when only status/deletion filter the list
    (PostgreSQL); None when the rows must be counted."""
    if query.q or query.created_from or query.created_to:
        return None
    if session.sync_session.get_bind().dialect.name != "postgresql":
        return None
    stmt = select(func.coalesce(func.sum(_row_counts.c.n), 0)).where(
        _row_counts.c.tbl == table_name
    )
    if not query.include_deleted:
        stmt = stmt.where(_row_counts.c.deleted.is_(False))
    if statuses:
        stmt = stmt.where(_row_counts.c.status.in_(list(statuses)))
    return int(await session.scalar(stmt) or 0)


async def keyset_page(
    session: AsyncSession,
    model: type[M],
    where: Sequence[ColumnElement[bool]],
    query: ListQuery,
    *,
    total: int | None = None,
) -> tuple[list[M], str | None, int]:
    id_col: InstrumentedAttribute[int] = model.id  # type: ignore[attr-defined]
    stmt = select(model).where(*where)
    if query.cursor is not None:
        last = decode_cursor(query.cursor, query.order)
        stmt = stmt.where(id_col > last if query.order == "asc" else id_col < last)
    stmt = stmt.order_by(id_col.asc() if query.order == "asc" else id_col.desc())
    rows = list((await session.scalars(stmt.limit(query.limit + 1))).all())
    if total is None:
        total = await session.scalar(select(func.count()).select_from(model).where(*where))
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        next_cursor = encode_cursor(rows[-1].id, query.order)  # type: ignore[attr-defined]
    return rows, next_cursor, int(total or 0)


def list_query_dependency(resource: str) -> Any:
    """Query parameters shared by the lists; `includeDeleted` needs the `restore` permission."""

    async def dependency(
        principal: Annotated[AuthPrincipal, Depends(current_principal)],
        authorizer: Annotated[Authorizer, Depends(get_authorizer)],
        limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
        cursor: Annotated[
            str | None, Query(max_length=64, description="`nextCursor` of the previous page")
        ] = None,
        order: Annotated[Literal["asc", "desc"], Query(description="By creation")] = "desc",
        include_deleted: Annotated[
            bool, Query(alias="includeDeleted", description="Needs the restore permission")
        ] = False,
        q: Annotated[
            str | None, Query(max_length=200, description="Case-insensitive substring")
        ] = None,
        created_from: Annotated[
            DateOrTime | None,
            Query(alias="createdFrom", description="RFC 3339 time, or a date (from its start)"),
        ] = None,
        created_to: Annotated[
            DateOrTime | None,
            Query(alias="createdTo", description="RFC 3339 time, or a date (to its end)"),
        ] = None,
    ) -> ListQuery:
        if include_deleted and not authorizer.allowed(principal.roles, resource, "restore"):
            raise Forbidden("includeDeleted needs the restore permission")
        return ListQuery(
            limit=limit,
            cursor=cursor,
            order=order,
            include_deleted=include_deleted,
            q=q.strip() or None if q is not None else None,
            created_from=time_bound(created_from, end=False),
            created_to=time_bound(created_to, end=True),
        )

    return Depends(dependency)


def include_deleted_dependency(resource: str) -> Any:
    """`includeDeleted` on a single-row GET, with the same permission rule as the lists."""

    async def dependency(
        principal: Annotated[AuthPrincipal, Depends(current_principal)],
        authorizer: Annotated[Authorizer, Depends(get_authorizer)],
        include_deleted: Annotated[
            bool, Query(alias="includeDeleted", description="Needs the restore permission")
        ] = False,
    ) -> bool:
        if include_deleted and not authorizer.allowed(principal.roles, resource, "restore"):
            raise Forbidden("includeDeleted needs the restore permission")
        return include_deleted

    return Depends(dependency)
