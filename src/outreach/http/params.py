"""Query and path parameters shared by the admin routes, parsed at the edge.

`SnowflakeId` is an id in a path: services receive an `int`; anything that cannot be an id
(not 1..19 digits, 0, past 64 bits) is a 404 like an unknown id, never a 422, since no such
row can exist. The list parameters (limit, cursor, order, filters) become a `ListQuery`
(db/listing.py); `includeDeleted` needs the `restore` permission.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query

from outreach.core.errors import Forbidden, NotFound
from outreach.core.schemas import DateOrTime, parse_id, time_bound
from outreach.db.listing import ListQuery
from outreach.http.deps import Principal
from outreach.state import StateDep


async def _snowflake_id(
    raw: Annotated[
        str,
        Path(
            alias="id",
            description="Snowflake id (decimal string)",
            examples=["7266051958845440010"],
        ),
    ],
) -> int:
    value = parse_id(raw)
    if value is None:
        raise NotFound("No such resource")
    return value


SnowflakeId = Annotated[int, Depends(_snowflake_id)]


def list_query_dependency(resource: str) -> Any:
    """Query parameters shared by the lists; `includeDeleted` needs the `restore` permission."""

    async def dependency(
        principal: Principal,
        state: StateDep,
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
        if include_deleted and not state.authorizer.allowed(principal.roles, resource, "restore"):
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
        principal: Principal,
        state: StateDep,
        include_deleted: Annotated[
            bool, Query(alias="includeDeleted", description="Needs the restore permission")
        ] = False,
    ) -> bool:
        if include_deleted and not state.authorizer.allowed(principal.roles, resource, "restore"):
            raise Forbidden("includeDeleted needs the restore permission")
        return include_deleted

    return Depends(dependency)


def page_query_dependency() -> Any:
    """The page parameters alone (limit, cursor, order, q): lists of configuration, which
    have no soft delete and no creation-time filters (the blocklist)."""

    async def dependency(
        limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
        cursor: Annotated[
            str | None, Query(max_length=64, description="`nextCursor` of the previous page")
        ] = None,
        order: Annotated[Literal["asc", "desc"], Query(description="By creation")] = "desc",
        q: Annotated[
            str | None, Query(max_length=200, description="Case-insensitive substring")
        ] = None,
    ) -> ListQuery:
        return ListQuery(
            limit=limit,
            cursor=cursor,
            order=order,
            include_deleted=False,
            q=q.strip() or None if q is not None else None,
            created_from=None,
            created_to=None,
        )

    return Depends(dependency)


def children_query_dependency(resource: str) -> Any:
    """The page parameters of what belongs to one row (an inquiry's comments and history):
    oldest first unless order=desc; `includeDeleted` (the row's own deletion) needs the
    restore permission."""

    async def dependency(
        principal: Principal,
        state: StateDep,
        limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
        cursor: Annotated[
            str | None, Query(max_length=64, description="`nextCursor` of the previous page")
        ] = None,
        order: Annotated[Literal["asc", "desc"], Query(description="By time")] = "asc",
        include_deleted: Annotated[
            bool,
            Query(alias="includeDeleted", description="Of a deleted row; needs restore"),
        ] = False,
    ) -> ListQuery:
        if include_deleted and not state.authorizer.allowed(principal.roles, resource, "restore"):
            raise Forbidden("includeDeleted needs the restore permission")
        return ListQuery(
            limit=limit,
            cursor=cursor,
            order=order,
            include_deleted=include_deleted,
            q=None,
            created_from=None,
            created_to=None,
        )

    return Depends(dependency)
