"""The hot-path data access of the public POSTs: no ORM unit of work, no per-request compiling.

Statements are written once as SQLAlchemy Core. On PostgreSQL each is compiled once for
asyncpg and run on a raw asyncpg pool (prepared and cached per connection by asyncpg);
measured here that is about twice the rate of executing the same Core statement through
SQLAlchemy (LIBRARY-NOTES, bench/). On SQLite, the embedded default, they run through the
SQLAlchemy engine, which handles SQLite's type conversions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

Row = Mapping[str, Any]


class FastConn(Protocol):
    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None: ...

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None: ...


class FastDB(Protocol):
    dialect: str

    def transaction(self) -> Any: ...

    def connection(self) -> Any: ...

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None: ...

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None: ...

    async def close(self) -> None: ...


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

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        c = self._db.compiled(stmt)
        await self._conn.execute(c.sql, *c.args(params))


async def _no_reset(_conn: Any) -> None:
    return None


class AsyncpgDB:
    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self._dsn = dsn
        self.dialect = "postgresql"
        self._min = min_size
        self._max = max_size
        self._pool: Any = None
        self._dialect = PGDialect_asyncpg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        self._cache: dict[int, tuple[Executable, _Compiled]] = {}

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

    def compiled(self, stmt: Executable) -> _Compiled:
        entry = self._cache.get(id(stmt))
        if entry is None or entry[0] is not stmt:
            entry = (stmt, _Compiled(stmt, self._dialect))
            self._cache[id(stmt)] = entry
        return entry[1]

    async def fetchrow(self, stmt: Executable, params: Mapping[str, Any]) -> Row | None:
        c = self.compiled(stmt)
        async with self._pool.acquire(timeout=5) as conn:
            row: Row | None = await conn.fetchrow(c.sql, *c.args(params))
            return row

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        c = self.compiled(stmt)
        async with self._pool.acquire(timeout=5) as conn:
            await conn.execute(c.sql, *c.args(params))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FastConn]:
        async with self._pool.acquire(timeout=5) as conn, conn.transaction():
            yield _PgConn(self, conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FastConn]:
        """Autocommit: each statement is its own transaction (one round trip)."""
        async with self._pool.acquire(timeout=5) as conn:
            yield _PgConn(self, conn)

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

    async def execute(self, stmt: Executable, params: Mapping[str, Any]) -> None:
        async with self.transaction() as conn:
            await conn.execute(stmt, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FastConn]:
        async with self._engine.begin() as conn:
            yield _SaConn(conn)

    connection = transaction

    async def close(self) -> None:
        return None


def make_fastdb(engine: AsyncEngine, sqlalchemy_url: str, pool_size: int) -> AsyncpgDB | EngineDB:
    if sqlalchemy_url.startswith("postgresql+asyncpg://"):
        dsn = "postgresql://" + sqlalchemy_url[len("postgresql+asyncpg://") :]
        return AsyncpgDB(dsn, max_size=pool_size)
    return EngineDB(engine)
