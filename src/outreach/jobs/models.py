"""The queue's tables, for the statements of this package (not on the models' metadata:
migration 0010 creates them, each on its own database).

PostgreSQL: pgqueuer's own `pgqueuer` table (only the columns we write or read), installed
by migration 0010 from the SQL pgqueuer 1.6.0 prints. SQLite (the embedded default): `jobs`,
ours, worked by the in-process poller (worker.py).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
)

QUEUE_METADATA = MetaData()

pgqueuer = Table(
    "pgqueuer",
    QUEUE_METADATA,
    Column("id", BigInteger, primary_key=True),
    Column("priority", Integer, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("execute_after", DateTime(timezone=True), nullable=False),
    # pgqueuer_status, an enum: written as a cast literal ('queued'::pgqueuer_status)
    Column("status", Text, nullable=False),
    Column("entrypoint", Text, nullable=False),
    Column("payload", LargeBinary),
    Column("attempts", Integer, nullable=False),
)

pgqueuer_log = Table(
    "pgqueuer_log",
    QUEUE_METADATA,
    Column("id", BigInteger, primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False),
)

pgqueuer_statistics = Table(
    "pgqueuer_statistics",
    QUEUE_METADATA,
    Column("id", BigInteger, primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False),
)

# Times are Unix seconds (REAL): computed in SQL by the statements that enqueue.
jobs = Table(
    "jobs",
    QUEUE_METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("status", Text, nullable=False),  # queued | failed
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("run_at", Float, nullable=False),
    Column("locked_by", Text),
    Column("locked_until", Float),
    Column("error", Text),
    Index("ix_jobs_status_run_at", "status", "run_at"),
    sqlite_autoincrement=True,  # ids never reused: handlers may name things by them
)
