"""The hot-path data access of the public POSTs and the lists: no ORM unit of work, no
per-request compiling.

Statements are written once as SQLAlchemy Core. On PostgreSQL each is compiled once for
asyncpg and run on a raw asyncpg pool (prepared and cached per connection by asyncpg);
measured here that is about twice the rate of executing the same Core statement through
SQLAlchemy (LIBRARY-NOTES, bench/). On SQLite, the embedded default, they run through the
SQLAlchemy engine, which handles SQLite's type conversions.

A `FastDB` is itself a `FastConn` whose statements autocommit one by one; `Grouped` ones are
group-committed on PostgreSQL (db/batch.py). `transaction()` gives one connection in one
transaction, `reading()` one connection for a few reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, NamedTuple, Protocol

from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from outreach.db.batch import Batcher, Compiled, Grouped

Row = Mapping[str, Any]
ACQUIRE_TIMEOUT = 5.0


class FastConn(Protocol):
    dialect: str  # "postgresql" or "sqlite"

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None: ...

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]: ...

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None: ...

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        """`grouped.single`'s row; on a FastDB (autocommit), group-committed on PostgreSQL."""
        ...

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        """`grouped.single`; on a FastDB (autocommit), group-committed on PostgreSQL."""
        ...


class FastDB(FastConn, Protocol):
    def transaction(self) -> AbstractAsyncContextManager[FastConn]: ...

    def reading(self) -> AbstractAsyncContextManager[FastConn]: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class PoolStats(NamedTuple):
    size: int  # connections open
    in_use: int  # checked out
    waiters: int  # requests queued for one


def _compile(stmt: Executable, dialect: PGDialect_asyncpg) -> Compiled:
    compiled = stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
    return Compiled(
        compiled.string,
        tuple(compiled.positiontup or ()),
        {
            name: value
            for name, value in compiled.params.items()
            if not compiled.binds[name].required
        },
    )


class _PgConn:
    """One pooled asyncpg connection (in a transaction, or for a few reads)."""

    __slots__ = ("_conn", "_db")
    dialect = "postgresql"

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

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        c = self._db.compiled(stmt)
        await self._conn.execute(c.sql, *c.args(params))

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        row = await self.fetchrow(grouped.single, params)
        for stmt in grouped.also:
            await self.execute(stmt, params)
        return row

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        await self.fetch_grouped(grouped, params)


async def _no_reset(_conn: Any) -> None:
    return None


class AsyncpgDB:
    """PostgreSQL: statements on a raw asyncpg pool; autocommit ones group-committed."""

    def __init__(self, dsn: str, *, max_size: int = 10) -> None:
        self._dsn = dsn
        self.dialect = "postgresql"
        self._max = max_size
        self._pool: Any = None
        self._turns = asyncio.Semaphore(max_size)
        self._waiting = 0  # requests queued for a connection (metrics)
        self._dialect = PGDialect_asyncpg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        self._cache: dict[int, tuple[Executable, Compiled]] = {}
        self._batchers: dict[Grouped, Batcher] = {}

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

    def pool_stats(self) -> PoolStats:
        if self._pool is None:
            return PoolStats(0, 0, self._waiting)
        size = self._pool.get_size()
        return PoolStats(size, size - self._pool.get_idle_size(), self._waiting)

    def compiled(self, stmt: Executable) -> Compiled:
        entry = self._cache.get(id(stmt))
        if entry is None or entry[0] is not stmt:
            entry = (stmt, _compile(stmt, self._dialect))
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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FastConn]:
        async with self.acquire() as conn, conn.transaction():
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

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        batcher = self._batchers.get(grouped)
        if batcher is None:
            batcher = self._batchers[grouped] = Batcher(grouped, self.compiled, self.acquire)
        row: Row | None = await batcher.run(params)
        return row

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        await self.fetch_grouped(grouped, params)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class _SaConn:
    """One SQLAlchemy connection in a transaction (SQLite)."""

    __slots__ = ("_conn", "dialect")

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self.dialect = conn.dialect.name

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        result = await self._conn.execute(stmt, dict(params))
        if not result.returns_rows:
            return None
        row = result.mappings().first()
        return dict(row) if row is not None else None

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]:
        result = await self._conn.execute(stmt, dict(params))
        return [dict(row) for row in result.mappings()]

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        await self._conn.execute(stmt, dict(params))

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        row = await self.fetchrow(grouped.single, params)
        for stmt in grouped.also:
            await self._conn.execute(stmt, dict(params))
        return row

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        await self.fetch_grouped(grouped, params)


class EngineDB:
    """SQLite (the embedded default): the same statements through SQLAlchemy, each
    autocommit statement in a transaction of its own (no group commit)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.dialect = engine.dialect.name

    async def open(self) -> None:
        return None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FastConn]:
        async with self._engine.begin() as conn:
            yield _SaConn(conn)

    reading = transaction

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        async with self.transaction() as conn:
            return await conn.fetchrow(stmt, params)

    async def fetch(self, stmt: Executable, params: Mapping[str, Any]) -> list[Row]:
        async with self.transaction() as conn:
            return await conn.fetch(stmt, params)

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        async with self.transaction() as conn:
            await conn.execute(stmt, params)

    async def fetch_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> Row | None:
        async with self.transaction() as conn:
            return await conn.fetch_grouped(grouped, params)

    async def execute_grouped(self, grouped: Grouped, params: Mapping[str, Any]) -> None:
        await self.fetch_grouped(grouped, params)

    async def close(self) -> None:
        return None


def make_fastdb(engine: AsyncEngine, sqlalchemy_url: str, pool_size: int) -> FastDB:
    if sqlalchemy_url.startswith("postgresql+asyncpg://"):
        dsn = "postgresql://" + sqlalchemy_url[len("postgresql+asyncpg://") :]
        return AsyncpgDB(dsn, max_size=pool_size)
    return EngineDB(engine)
