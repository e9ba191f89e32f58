"""Declarative base, UTC times, the engine and the session factory; after-commit callbacks.

The per-request session (one transaction per request, committed before the answer) is the
HTTP dependency `SessionDep` (http/deps.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import DateTime, Dialect, MetaData, Table, event, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from outreach.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on PostgreSQL and on SQLite (which stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, typed as a Table (Core statements on the hot paths)."""
    return cast(Table, model.__table__)


R = TypeVar("R", bound="Base")


async def get_row(
    session: AsyncSession,
    model: type[R],
    row_id: int,
    *,
    include_deleted: bool = False,
    lock: bool = False,
) -> R | None:
    """One row of a soft-deleted table by id: a deleted row is invisible unless
    `include_deleted` (API.md section 1); `lock` holds it (FOR UPDATE) until the request's
    transaction ends."""
    columns = table_of(model).c
    stmt = select(model).where(columns.id == row_id)
    if not include_deleted:
        stmt = stmt.where(columns.deleted_at.is_(None))
    if lock:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


def utcnow() -> datetime:
    """Now in UTC, truncated to the millisecond the API shows."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(settings: Settings, *, pool: bool = True) -> AsyncEngine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 5}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        # Admin requests hold a connection while the (busy) event loop serves others: room for
        # bursts without long waits. Per process: DB_POOL_SIZE asyncpg + up to 4x here.
        "max_overflow": 3 * settings.db_pool_size,
        # No pre-ping (a round trip per checkout, ~3 % of a list request): a connection that
        # died answers one request 503 and is discarded; a database restart invalidates the pool.
        "pool_recycle": 1800,
        # Statement parameters (tokens, addresses) never appear in error messages or logs.
        "hide_parameters": True,
        "pool_timeout": 10,
        # A stopped database must answer quickly (503), not hang requests.
        "connect_args": {"timeout": 3, "command_timeout": 10},
    }
    if not pool:
        kwargs = {
            "poolclass": NullPool,
            "connect_args": kwargs["connect_args"],
            "hide_parameters": True,
        }
    return create_async_engine(url, **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


AfterCommit = Callable[[], None]


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Call `callback` once the request's transaction has committed (realtime events)."""
    session.info.setdefault("after_commit", []).append(callback)


def run_after_commit(session: AsyncSession) -> None:
    """Run the callbacks of a session whose transaction has committed (once)."""
    callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
    for callback in callbacks:
        callback()
