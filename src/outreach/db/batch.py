"""Group commit: concurrent single-row writes become one statement and one transaction.

A `Grouped` pairs a single-row statement with its many-row form. While one batch is being
written, the rows that arrive wait and go together in the next: no timer, so at low load
every row is written alone at once, and under load one statement carries many rows in one
round trip (docs/adr/0001). When a batch fails, its rows are retried one by one, so each
request gets its own row's outcome; a database outage fails them all at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import String, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import Executable
from sqlalchemy.sql.selectable import CTE

from outreach.db.outage import is_database_outage

Row = Mapping[str, Any]


class Grouped:
    """A single-row statement and, on PostgreSQL, its many-row form for group commit.

    `many` binds, under each parameter name of `single`, the array of that parameter's
    values (`INSERT ... SELECT FROM unnest(...)`): one statement, so statement triggers run
    once per burst. For a statement that returns the row it wrote (the subscribe upsert),
    `match` names a parameter unique to each request that the returned row carries as a
    column of the same name, to hand every request its own row; two requests with the same
    `distinct` parameter never share a batch (an upsert may not touch a row twice). Without
    `many` (SQLite) the statement is always run alone.

    `also` are statements run after `single`, with the same parameters and in the same
    transaction, where the database has no data-modifying CTE to put them in `single`
    (SQLite: the job a write enqueues, jobs/queue.py). On PostgreSQL they are part of
    `single` and `many` themselves.
    """

    __slots__ = ("also", "distinct", "many", "match", "single")

    def __init__(
        self,
        single: Executable,
        many: Executable | None = None,
        *,
        match: str | None = None,
        distinct: str | None = None,
        also: tuple[Executable, ...] = (),
    ) -> None:
        if also and many is not None:
            raise ValueError("`also` is for statements that cannot be grouped (SQLite)")
        self.single = single
        self.many = many
        self.match = match
        self.distinct = distinct
        self.also = also


def _arrays(table: Table, extra: dict[str, Any]) -> list[Any]:
    # Unbounded element types: a cast to varchar(n)[] would truncate a value that is too
    # long, where the single-row INSERT refuses it; the INSERT's own cast refuses it here too.
    arrays = [
        bindparam(
            c.name,
            type_=postgresql.ARRAY(String() if isinstance(c.type, String) else c.type),
        )
        for c in table.columns
    ]
    return arrays + [bindparam(name, type_=postgresql.ARRAY(kind)) for name, kind in extra.items()]


def unnest_rows(table: Table, extra: dict[str, Any]) -> CTE:
    """`WITH u AS (SELECT * FROM unnest(...))`: every column of `table` and each of `extra`
    (name: element type) bound as an array under its own name; for a many-row form that
    writes `table` and something else from the same rows (inquiries/repository.py)."""
    names = [c.name for c in table.columns] + list(extra)
    rows = func.unnest(*_arrays(table, extra)).table_valued(*names).render_derived(name="u")
    return select(*rows.c).cte("u")


def unnest_insert(table: Table) -> postgresql.Insert:
    """`INSERT INTO table SELECT FROM unnest(...)`: every column bound as an array under its
    own name, the many-row form of an INSERT that binds every column (PostgreSQL)."""
    names = [c.name for c in table.columns]
    rows = func.unnest(*_arrays(table, {})).table_valued(*names).render_derived(name="u")
    return postgresql.insert(table).from_select(names, select(*(rows.c[n] for n in names)))


class Compiled:
    """A statement compiled once for asyncpg: its SQL and the order of its parameters."""

    __slots__ = ("defaults", "names", "sql")

    def __init__(self, sql: str, names: tuple[str, ...], defaults: dict[str, Any]) -> None:
        self.sql = sql
        self.names = names
        # Values bound inside the statement (literals); a bindparam() without one is required.
        self.defaults = defaults

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        defaults = self.defaults
        return [params[n] if n in params else defaults[n] for n in self.names]


# A request waiting in a batch: its parameters, its future, its `distinct` value.
_Pending = tuple[Mapping[str, Any], asyncio.Future[Any], Any]
Acquire = Callable[[], AbstractAsyncContextManager[Any]]


class Batcher:
    """The group commit of one Grouped statement on an asyncpg pool (see the module docstring)."""

    MAX_BATCH = 256

    def __init__(
        self, grouped: Grouped, compiler: Callable[[Executable], Compiled], acquire: Acquire
    ) -> None:
        if grouped.many is None:
            raise ValueError("a Grouped statement without its many-row form cannot be batched")
        self._grouped = grouped
        self._single = compiler(grouped.single)
        self._many = compiler(grouped.many)
        self._acquire = acquire
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    def run(self, params: Mapping[str, Any]) -> Awaitable[Any]:
        """The row `grouped.single` returns for `params` (None for a statement without)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        distinct = self._grouped.distinct
        self._pending.append((params, future, params[distinct] if distinct else None))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return future

    def _take(self) -> list[_Pending]:
        if self._grouped.distinct is None:
            batch = self._pending[: self.MAX_BATCH]
            del self._pending[: self.MAX_BATCH]
            return batch
        batch, later, seen = [], [], set()
        for item in self._pending:
            if len(batch) < self.MAX_BATCH and item[2] not in seen:
                seen.add(item[2])
                batch.append(item)
            else:
                later.append(item)
        self._pending = later
        return batch

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._write(self._take())
        finally:
            self._task = None

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            async with self._acquire() as conn:
                results = await self._write_on(conn, batch)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(batch) > 1 and not is_database_outage(exc):
                for item in batch:
                    await self._write([item])
                return
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _write_on(self, conn: Any, batch: list[_Pending]) -> list[Any]:
        many, match = self._many, self._grouped.match
        if len(batch) == 1:
            args = self._single.args(batch[0][0])
            if match is None:
                await conn.execute(self._single.sql, *args)
                return [None]
            return [await conn.fetchrow(self._single.sql, *args)]
        # One array per parameter of the single statement; the many-row form's own literals.
        args = [
            many.defaults[name] if name in many.defaults else [p[name] for p, _, _ in batch]
            for name in many.names
        ]
        if match is None:
            await conn.execute(many.sql, *args)
            return [None] * len(batch)
        by_match = {row[match]: row for row in await conn.fetch(many.sql, *args)}
        return [by_match.get(params[match]) for params, _, _ in batch]
