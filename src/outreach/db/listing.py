"""Keyset pagination over Snowflake ids (time-ordered), newest first unless order=asc."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    any_,
    bindparam,
    column,
    func,
    select,
    table,
)
from sqlalchemy.dialects import postgresql

from outreach.core.schemas import decode_cursor, encode_cursor
from outreach.core.text import like_pattern
from outreach.db.fast import FastDB, Row


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int
    cursor: str | None
    order: str
    include_deleted: bool
    q: str | None
    created_from: datetime | None
    created_to: datetime | None


# Kept by triggers on PostgreSQL (migrations 0002, 0006); not a model: SQLite has no such table.
_row_counts = table("row_counts", column("tbl"), column("status"), column("deleted"), column("n"))


NO_ONE = "\x00none"  # the `assignee` of an unassigned filter (no sub can hold a NUL)


@dataclass(frozen=True, slots=True)
class Shape:
    """Which filters a list request uses: one statement per shape, compiled once."""

    dialect: str
    order: str
    include_deleted: bool
    q: bool
    created_from: bool
    created_to: bool
    statuses: bool
    email: bool
    cursor: bool
    # The table's columns these filters read (a blocklist filters `kind`, searches `value`,
    # and has no soft delete).
    status_column: str = "status"
    search_column: str = "search_text"
    soft_delete: bool = True
    spam: bool | None = None  # inquiries: spam_reason set (True) or not (False)
    assignee: str | None = None  # inquiries: "none" (unassigned) or "one" (param `assignee`)
    priorities: bool = False  # inquiries: priority in param `priorities`


def _in(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":  # one parameter, an array, for any number of values
        return column == any_(bindparam(name, type_=postgresql.ARRAY(String)))
    return column.in_(bindparam(name, expanding=True))


def _where(t: Table, shape: Shape) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if shape.soft_delete and not shape.include_deleted:
        where.append(t.c.deleted_at.is_(None))
    if shape.q:
        where.append(t.c[shape.search_column].like(bindparam("q"), escape="\\"))
    if shape.created_from:
        where.append(t.c.created_at >= bindparam("created_from"))
    if shape.created_to:
        where.append(t.c.created_at <= bindparam("created_to"))
    if shape.statuses:
        where.append(_in(t.c[shape.status_column], "statuses", shape.dialect))
    if shape.email:
        where.append(t.c.email == bindparam("email"))
    if shape.spam is not None:
        reason = t.c.spam_reason
        where.append(reason.is_not(None) if shape.spam else reason.is_(None))
    if shape.assignee == "none":
        where.append(t.c.assignee_id.is_(None))
    elif shape.assignee == "one":
        where.append(t.c.assignee_id == bindparam("assignee"))
    if shape.priorities:
        where.append(_in(t.c.priority, "priorities", shape.dialect))
    return where


@lru_cache(maxsize=512)
def rows_statement(t: Table, columns: tuple[str, ...], shape: Shape) -> Select[Any]:
    """`columns` of the rows a list request matches, in its order: every row (the CSV
    export); with `.limit(bindparam("limit"))`, a page."""
    where = _where(t, shape)
    if shape.cursor:
        where.append(
            t.c.id > bindparam("after") if shape.order == "asc" else t.c.id < bindparam("after")
        )
    return (
        select(*(t.c[name] for name in columns))
        .where(*where)
        .order_by(t.c.id.asc() if shape.order == "asc" else t.c.id.desc())
    )


@lru_cache(maxsize=512)
def _page_statement(t: Table, columns: tuple[str, ...], shape: Shape) -> Select[Any]:
    return rows_statement(t, columns, shape).limit(bindparam("limit", type_=Integer))


@lru_cache(maxsize=512)
def _count_statement(t: Table, shape: Shape) -> Select[Any]:
    return select(func.count().label("n")).select_from(t).where(*_where(t, shape))


@lru_cache(maxsize=64)
def _counters_statement(table_name: str, include_deleted: bool, statuses: bool) -> Select[Any]:
    stmt = select(func.coalesce(func.sum(_row_counts.c.n), 0).label("n")).where(
        _row_counts.c.tbl == table_name
    )
    if not include_deleted:
        stmt = stmt.where(_row_counts.c.deleted.is_(False))
    if statuses:
        stmt = stmt.where(_in(_row_counts.c.status, "statuses", "postgresql"))
    return stmt


async def fetch_page(
    db: FastDB,
    t: Table,
    columns: tuple[str, ...],
    query: ListQuery,
    *,
    statuses: Sequence[str] | None = None,
    email: str | None = None,
    counted: bool = False,
    **layout: Any,
) -> tuple[list[Row], str | None, int]:
    """One page of rows (`columns` of `t`), newest first unless order=asc, with the cursor of
    the next page and the total. Plain statements on the public hot path's connections
    (db/fast.py), compiled once per shape of request: no ORM objects for a read-only
    page (the ORM's unit of work is for the writes). `layout`: list_filter's keywords."""
    shape, params = list_filter(db.dialect, query, statuses=statuses, email=email, **layout)
    params["limit"] = query.limit + 1
    # Triggers keep per-status counters on PostgreSQL (`counted` tables: inquiries and
    # subscribers): a total without counting a million rows, whenever only status and
    # deletion filter the list.
    if (
        counted
        and db.dialect == "postgresql"
        and not (shape.q or shape.created_from or shape.created_to or shape.email)
        and shape.spam is None
        and shape.assignee is None
        and not shape.priorities
    ):
        count = _counters_statement(t.name, query.include_deleted, shape.statuses)
    else:
        count = _count_statement(t, shape)
    async with db.reading() as conn:
        rows = await conn.fetch(_page_statement(t, columns, shape), params)
        found = await conn.fetchrow(count, params)
    total = int(found["n"]) if found is not None else 0
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        next_cursor = encode_cursor(int(rows[-1]["id"]), query.order)
    return rows, next_cursor, total


@lru_cache(maxsize=64)
def _children_statement(
    t: Table, parent: str, columns: tuple[str, ...], order: str, cursor: bool
) -> Select[Any]:
    where = [t.c[parent] == bindparam("parent")]
    if cursor:
        where.append(t.c.id > bindparam("after") if order == "asc" else t.c.id < bindparam("after"))
    return (
        select(*(t.c[name] for name in columns))
        .where(*where)
        .order_by(t.c.id.asc() if order == "asc" else t.c.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


@lru_cache(maxsize=64)
def _children_count(t: Table, parent: str) -> Select[Any]:
    return select(func.count().label("n")).select_from(t).where(t.c[parent] == bindparam("parent"))


async def fetch_children(
    db: FastDB, t: Table, parent: str, parent_id: int, query: ListQuery, *, extra: int = 0
) -> tuple[list[Row], str | None, int]:
    """A page of the rows of `t` that belong to one parent (its comments, its history),
    by id in the query's order: an index on (parent, id) serves both. `extra` more rows are
    read for a caller that merges in rows of its own (the derived `created` entry)."""
    columns = tuple(c.name for c in t.columns)
    params: dict[str, Any] = {"parent": parent_id, "limit": query.limit + 1 + extra}
    if query.cursor is not None:
        params["after"] = decode_cursor(query.cursor, query.order)
    statement = _children_statement(t, parent, columns, query.order, query.cursor is not None)
    async with db.reading() as conn:
        rows = await conn.fetch(statement, params)
        found = await conn.fetchrow(_children_count(t, parent), params)
    total = int(found["n"]) if found is not None else 0
    if extra:
        return rows, None, total
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        next_cursor = encode_cursor(int(rows[-1]["id"]), query.order)
    return rows, next_cursor, total


def list_filter(
    dialect: str,
    query: ListQuery,
    *,
    statuses: Sequence[str] | None = None,
    email: str | None = None,
    spam: bool | None = None,
    assignee: str | None = None,
    priorities: Sequence[str] | None = None,
    status_column: str = "status",
    search_column: str = "search_text",
    soft_delete: bool = True,
) -> tuple[Shape, dict[str, Any]]:
    """A list request's shape and the values of its parameters (`rows_statement`)."""
    shape = Shape(
        dialect=dialect,
        order=query.order,
        include_deleted=query.include_deleted,
        q=bool(query.q),
        created_from=query.created_from is not None,
        created_to=query.created_to is not None,
        statuses=bool(statuses),
        email=email is not None,
        cursor=query.cursor is not None,
        status_column=status_column,
        search_column=search_column,
        soft_delete=soft_delete,
        spam=spam,
        assignee=None if assignee is None else ("none" if assignee == NO_ONE else "one"),
        priorities=bool(priorities),
    )
    params: dict[str, Any] = {}
    if query.q:
        params["q"] = like_pattern(query.q)
    if query.created_from is not None:
        params["created_from"] = query.created_from
    if query.created_to is not None:
        params["created_to"] = query.created_to
    if statuses:
        params["statuses"] = list(statuses)
    if email is not None:
        params["email"] = email
    if assignee is not None and assignee != NO_ONE:
        params["assignee"] = assignee
    if priorities:
        params["priorities"] = list(priorities)
    if query.cursor is not None:
        params["after"] = decode_cursor(query.cursor, query.order)
    return shape, params


def page_body(data: list[dict[str, Any]], limit: int, next_cursor: str | None, total: int) -> bytes:
    """The JSON of a Page (core/schemas.py: `data` and `meta`)."""
    return orjson.dumps(
        {"data": data, "meta": {"limit": limit, "nextCursor": next_cursor, "total": total}}
    )
