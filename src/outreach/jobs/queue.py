"""Putting jobs in the queue, inside the caller's transaction; what the queue holds."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    Float,
    Integer,
    LargeBinary,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement, Executable, FromClause
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import BindParameter, ColumnClause

from outreach.db.fast import FastConn
from outreach.jobs.models import jobs, pgqueuer, pgqueuer_log, pgqueuer_statistics

_KIND = re.compile(r"[a-z][a-z0-9._-]{0,99}")
# Written as literals (kinds are ours, checked by _kind): a job statement binds nothing but
# its payload, so a grouped statement's many-row form carries no extra arrays.
_QUEUED: ColumnClause[Any] = literal_column("'queued'::pgqueuer_status")
# Unix seconds, the `jobs` table's times (SQLite's julianday counts days from 4714 BC).
SQLITE_NOW: ColumnClause[float] = literal_column(
    "((julianday('now') - 2440587.5) * 86400.0)", Float
)


def _kind(kind: str) -> str:
    if not _KIND.fullmatch(kind):
        raise ValueError(f"job kind {kind!r}: lower-case letters, digits and . _ -")
    return kind


def payload_bytes(payload: Mapping[str, Any]) -> bytes:
    """A payload as the queue stores it (JSON). Ids and settings, never personal data:
    handlers read the rows they need when they run."""
    return orjson.dumps(payload)


def job_insert(
    dialect: str,
    kind: str,
    payload: ColumnElement[Any],
    *,
    source: FromClause | None = None,
    where: ColumnElement[bool] | None = None,
) -> Insert:
    """INSERT of one `kind` job per row of `source` (one job without a source), its payload
    the expression `payload` (JSON bytes), queued now.

    For a statement of another table that must enqueue in the same statement: on PostgreSQL
    put it in a data-modifying CTE and `.add_cte()` it to this INSERT (db/batch.py's grouped
    forms, inquiries/repository.py); on SQLite, which has none, run this after it in the same
    transaction (`Grouped(..., also=...)`).
    """
    kind_literal: ColumnClause[str] = literal_column(f"'{_kind(kind)}'")
    if dialect == "postgresql":
        rows = select(literal_column("0"), kind_literal, payload, _QUEUED)
        columns = ["priority", "entrypoint", "payload", "status"]
        table = pgqueuer
    else:
        rows = select(
            kind_literal,
            payload,
            literal_column("'queued'"),
            literal_column("0"),
            SQLITE_NOW,
            SQLITE_NOW,
        )
        columns = ["kind", "payload", "status", "attempts", "created_at", "run_at"]
        table = jobs
    if source is not None:
        rows = rows.select_from(source)
    if where is not None:
        rows = rows.where(where)
    return insert(table).from_select(columns, rows)


def _delayed(dialect: str) -> Executable:
    payload = bindparam("p_payload", type_=LargeBinary)
    delay = bindparam("p_delay", type_=Float)
    kind: BindParameter[str] = bindparam("p_kind")
    if dialect == "postgresql":
        return insert(pgqueuer).values(
            priority=bindparam("p_priority", type_=Integer),
            entrypoint=kind,
            payload=payload,
            status=_QUEUED,
            execute_after=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, delay),
        )
    return insert(jobs).values(
        kind=kind,
        payload=payload,
        status="queued",
        attempts=0,
        created_at=SQLITE_NOW,
        run_at=SQLITE_NOW + delay,
    )


LEAF = 1  # the priority of a job that queues no other (see enqueue)
_ENQUEUE = {"postgresql": _delayed("postgresql"), "sqlite": _delayed("sqlite")}


async def enqueue(
    conn: FastConn | AsyncSession,
    kind: str,
    payload: Mapping[str, Any],
    *,
    delay_seconds: float = 0,
    priority: int = 0,
) -> None:
    """Queue a `kind` job in `conn`'s transaction: it runs once that commits, never if it
    rolls back. `conn` is a FastConn (db/fast.py; a FastDB itself commits the job alone) or
    the request's AsyncSession (joins its transaction).

    `priority`: on PostgreSQL a ready job of a higher priority is taken before older ones of
    a lower (pgqueuer orders by priority, then id). The jobs a fan-out queues (LEAF: one mail,
    one webhook delivery) outrank the fan-outs (0: the submit's `inquiry.sent`), so under a
    backlog the queue drains depth first: the deliveries a fan-out made do not wait behind
    every fan-out queued after it. SQLite's in-process queue stays first in, first out."""
    params: dict[str, Any] = {
        "p_kind": _kind(kind),
        "p_payload": payload_bytes(payload),
        "p_delay": float(delay_seconds),
    }
    dialect = conn.get_bind().dialect.name if isinstance(conn, AsyncSession) else conn.dialect
    if dialect == "postgresql":
        params["p_priority"] = priority
    await conn.execute(_ENQUEUE[dialect], params)


@dataclass(frozen=True, slots=True)
class KindStats:
    kind: str
    queued: int  # waiting, running or waiting for a retry
    oldest_seconds: float  # age of the oldest of those (0 without)
    failed: int  # given up, kept


_STATS_PG = text(
    """
    SELECT entrypoint AS kind,
           count(*) FILTER (WHERE status IN ('queued', 'picked')) AS queued,
           coalesce(extract(epoch FROM now() - min(created) FILTER (
               WHERE status IN ('queued', 'picked'))), 0) AS oldest,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM pgqueuer GROUP BY entrypoint
    """
)
_STATS_SQLITE = text(
    """
    SELECT kind,
           sum(status = 'queued') AS queued,
           coalesce((julianday('now') - 2440587.5) * 86400.0
                    - min(CASE WHEN status = 'queued' THEN created_at END), 0) AS oldest,
           sum(status = 'failed') AS failed
    FROM jobs GROUP BY kind
    """
)


async def stats(conn: FastConn) -> list[KindStats]:
    """Per kind: how many jobs wait, the age of the oldest, how many failed (metrics)."""
    stmt = _STATS_PG if conn.dialect == "postgresql" else _STATS_SQLITE
    return [
        KindStats(
            str(row["kind"]), int(row["queued"] or 0), float(row["oldest"]), int(row["failed"] or 0)
        )
        for row in await conn.fetch(stmt, {})
    ]


LOG_DAYS = 7
_PURGE_PG = (
    delete(pgqueuer_log).where(
        pgqueuer_log.c.created < func.now() - func.make_interval(0, 0, 0, LOG_DAYS)
    ),
    delete(pgqueuer_statistics).where(
        pgqueuer_statistics.c.created < func.now() - func.make_interval(0, 0, 0, LOG_DAYS)
    ),
)


async def purge(conn: FastConn) -> None:
    """pgqueuer's log (a row per transition of every job) is kept for LOG_DAYS; failed
    jobs stay until someone acts on them (docs/operations.md, "Mail")."""
    if conn.dialect == "postgresql":
        for stmt in _PURGE_PG:
            await conn.execute(stmt, {})
