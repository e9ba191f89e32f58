"""The hot-path data access of the public POSTs: no ORM unit of work, no per-request compiling.

Statements are written once as SQLAlchemy Core. On PostgreSQL each is compiled once for
asyncpg and run on a raw asyncpg pool (prepared and cached per connection by asyncpg);
measured here that is about twice the rate of executing the same Core statement through
SQLAlchemy (LIBRARY-NOTES, bench/). On SQLite, the embedded default, they run through the
SQLAlchemy engine, which handles SQLite's type conversions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Protocol

from sqlalchemy import String, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

Row = Mapping[str, Any]
ACQUIRE_TIMEOUT = 5.0


class FastConn(Protocol):
    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None: ...

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]: ...

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        """`grouped.single`'s row; outside a transaction, group-committed on PostgreSQL."""
        ...

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        """`grouped.single`; outside a transaction, group-committed on PostgreSQL."""
        ...

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None: ...


class FastDB(Protocol):
    dialect: str

    def transaction(self) -> Any: ...

    def connection(self) -> Any: ...

    def reading(self) -> Any: ...

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None: ...

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]: ...

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None: ...

    async def close(self) -> None: ...


class PoolStats(NamedTuple):
    size: int  # connections open
    in_use: int  # checked out
    waiters: int  # requests queued for one


class _Compiled:
    __slots__ = ("defaults", "names", "sql")

    def __init__(self, stmt: Executable, dialect: PGDialect_asyncpg) -> None:
        compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        # Values bound inside the statement (literals); a bindparam() without one is required.
        self.defaults: dict[str, Any] = {
            name: value
            for name, value in compiled.params.items()
            if not compiled.binds[name].required
        }

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        defaults = self.defaults
        return [params[n] if n in params else defaults[n] for n in self.names]


class _PgConn:
    __slots__ = ("_conn", "_db")

    def __init__(self, db: AsyncpgDB, conn: Any) -> None:
        self._db = db
        self._conn = conn

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        c = self._db.compiled(stmt)
        row: Row | None = await self._conn.fetchrow(c.sql, *c.args(params))
        return row

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]:
        c = self._db.compiled(stmt)
        rows: list[Row] = await self._conn.fetch(c.sql, *c.args(params))
        return rows

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        return await self.fetchrow(grouped.single, params)

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        await self.execute(grouped.single, params)

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        c = self._db.compiled(stmt)
        await self._conn.execute(c.sql, *c.args(params))


async def _no_reset(_conn: Any) -> None:
    return None


class Grouped:
    """A single-row statement and its many-row form, for group commit.

    `many` binds, under each parameter name of `single`, the array of that parameter's
    values (`INSERT ... SELECT FROM unnest(...)`): one statement, so statement triggers run
    once per burst. For a statement that returns the row it wrote (the subscribe upsert),
    `match` names a parameter unique to each request that the returned row carries as a
    column of the same name, to hand every request its own row; two requests with the same
    `distinct` parameter never share a batch (an upsert may not touch a row twice).
    """

    __slots__ = ("distinct", "many", "match", "single")

    def __init__(
        self,
        single: Executable,
        many: Executable,
        *,
        match: str | None = None,
        distinct: str | None = None,
    ) -> None:
        self.single = single
        self.many = many
        self.match = match
        self.distinct = distinct


def unnest_insert(table: Table) -> postgresql.Insert:
    """`INSERT INTO table SELECT FROM unnest(...)`: every column bound as an array under its
    own name, the many-row form of an INSERT that binds every column (PostgreSQL)."""
    names = [c.name for c in table.columns]
    # Unbounded element types: a cast to varchar(n)[] would truncate a value that is too
    # long, where the single-row INSERT refuses it; the INSERT's own cast refuses it here too.
    arrays = [
        bindparam(
            c.name,
            type_=postgresql.ARRAY(String() if isinstance(c.type, String) else c.type),
        )
        for c in table.columns
    ]
    rows = func.unnest(*arrays).table_valued(*names).render_derived(name="u")
    return postgresql.insert(table).from_select(names, select(*(rows.c[n] for n in names)))


# A request waiting in a batch: its parameters, its future, its `distinct` value.
_Pending = tuple[Mapping[str, Any], asyncio.Future[Any], Any]


class _Batcher:
    """Group commit: rows that arrive while a batch is being written go in the next one.

    No timer: at low load every row is written alone at once (the single statement); under
    load one many-row statement carries many rows in one round trip and one transaction.
    When a batch fails, its rows are retried one by one so that each request gets its own
    row's outcome.
    """

    MAX_BATCH = 256

    def __init__(self, db: AsyncpgDB, grouped: Grouped) -> None:
        self._db = db
        self._grouped = grouped
        self._single = db.compiled(grouped.single)
        self._many = db.compiled(grouped.many)
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self, params: Mapping[str, Any]) -> Any:
        """The row `grouped.single` returns for `params` (None for a statement without)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        distinct = self._grouped.distinct
        self._pending.append((params, future, params[distinct] if distinct else None))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

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
            async with self._db.acquire() as conn:
                results = await self._write_on(conn, batch)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
            if len(batch) > 1 and not _is_outage(exc):
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


def _is_outage(exc: BaseException) -> bool:
    from outreach.core.errors import is_database_outage

    return is_database_outage(exc)


class _AutoConn:
    """Autocommit statements on the pool; Grouped ones are group-committed."""

    __slots__ = ("_db",)

    def __init__(self, db: AsyncpgDB) -> None:
        self._db = db

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        return await self._db.fetchrow(stmt, params)

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]:
        return await self._db.fetch(stmt, params)

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        return await self._db.fetch_grouped(grouped, params)

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        await self._db.execute_grouped(grouped, params)

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        await self._db.execute(stmt, params)


class AsyncpgDB:
    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self._dsn = dsn
        self.dialect = "postgresql"
        self._min = min_size
        self._max = max_size
        self._pool: Any = None
        self._turns = asyncio.Semaphore(max_size)
        self._waiting = 0  # requests queued for a connection (metrics)
        self._dialect = PGDialect_asyncpg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        self._cache: dict[int, tuple[Executable, _Compiled]] = {}
        self._batchers: dict[Grouped, _Batcher] = {}

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max,
            timeout=3,  # connect: a stopped database answers 503 quickly
            command_timeout=10,
            max_inactive_connection_lifetime=300,
            # asyncpg's default reset runs a query on every release (a round trip per
            # request). These connections never change session state (no SET, LISTEN,
            # advisory locks, cursors), so there is nothing to reset.
            reset=_no_reset,
        )

    @property
    def pool(self) -> Any:
        return self._pool

    def pool_stats(self) -> PoolStats:
        if self._pool is None:
            return PoolStats(0, 0, self._waiting)
        size = self._pool.get_size()
        return PoolStats(size, size - self._pool.get_idle_size(), self._waiting)

    def compiled(self, stmt: Executable) -> _Compiled:
        entry = self._cache.get(id(stmt))
        if entry is None or entry[0] is not stmt:
            entry = (stmt, _Compiled(stmt, self._dialect))
            self._cache[id(stmt)] = entry
        return entry[1]

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """A pooled connection, waited for at most ACQUIRE_TIMEOUT seconds (asyncio.timeout:
        no task per checkout, unlike the pool's own `timeout=`), first come first served.

        The pool's own queue lets a newcomer take a connection just released to a waiter,
        so under load some requests waited for seconds (list at 32 connections on a pool of
        10: p50 51 ms, p99 0.6-1.2 s). asyncio.Semaphore hands turns out in order (p99 ~110 ms).
        """
        async with asyncio.timeout(ACQUIRE_TIMEOUT):
            self._waiting += 1
            try:
                await self._turns.acquire()
            finally:
                self._waiting -= 1
            try:
                conn = await self._pool.acquire()
            except BaseException:
                self._turns.release()
                raise
        try:
            yield conn
        finally:
            try:
                await self._pool.release(conn)
            finally:
                self._turns.release()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[FastConn]:
        """One connection for a few autocommit reads (a list page and its total)."""
        async with self.acquire() as conn:
            yield _PgConn(self, conn)

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        c = self.compiled(stmt)
        async with self.acquire() as conn:
            row: Row | None = await conn.fetchrow(c.sql, *c.args(params))
            return row

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]:
        c = self.compiled(stmt)
        async with self.acquire() as conn:
            rows: list[Row] = await conn.fetch(c.sql, *c.args(params))
            return rows

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        c = self.compiled(stmt)
        async with self.acquire() as conn:
            await conn.execute(c.sql, *c.args(params))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FastConn]:
        async with self.acquire() as conn, conn.transaction():
            yield _PgConn(self, conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FastConn]:
        """Autocommit: each statement is its own transaction. Statements without results
        (the public INSERTs) are group-committed with those of concurrent requests."""
        yield _AutoConn(self)

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        batcher = self._batchers.get(grouped)
        if batcher is None:
            batcher = self._batchers[grouped] = _Batcher(self, grouped)
        row: Row | None = await batcher.run(params)
        return row

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        await self.fetch_grouped(grouped, params)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class _SaConn:
    __slots__ = ("_conn",)

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        result = await self._conn.execute(stmt, dict(params))
        if not result.returns_rows:
            return None
        row = result.mappings().first()
        return dict(row) if row is not None else None

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        return await self.fetchrow(grouped.single, params)

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        await self.execute(grouped.single, params)

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]:
        result = await self._conn.execute(stmt, dict(params))
        return [dict(row) for row in result.mappings()]

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        await self._conn.execute(stmt, dict(params))


class EngineDB:
    """SQLite (and any other engine): the same statements through SQLAlchemy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.dialect = engine.dialect.name

    async def open(self) -> None:
        return None

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        async with self.transaction() as conn:
            return await conn.fetchrow(stmt, params)

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]:
        async with self.transaction() as conn:
            return await conn.fetch(stmt, params)

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        async with self.transaction() as conn:
            await conn.execute(stmt, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FastConn]:
        async with self._engine.begin() as conn:
            yield _SaConn(conn)

    connection = reading = transaction

    async def close(self) -> None:
        return None


def make_fastdb(engine: AsyncEngine, sqlalchemy_url: str, pool_size: int) -> AsyncpgDB | EngineDB:
    if sqlalchemy_url.startswith("postgresql+asyncpg://"):
        dsn = "postgresql://" + sqlalchemy_url[len("postgresql+asyncpg://") :]
        return AsyncpgDB(dsn, max_size=pool_size)
    return EngineDB(engine)
