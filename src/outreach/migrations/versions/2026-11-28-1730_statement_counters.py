"""Counters kept once per statement on INSERT and DELETE; a short GIN pending list on inquiries.

Revision ID: 0006_statement_counters
Revises: 0005_subscriber_gin
Create Date: 2026-11-28 17:30:00

The public POSTs are group-committed as one multi-row INSERT per burst (db/batch.py). Row
triggers upserted the counters and the rollup once per row; statement triggers with a
transition table upsert them once per statement and group (status, bucket). Updates keep
their row triggers: PostgreSQL allows no transition table on an `UPDATE OF column` trigger,
and the staff portal updates rows one or a few at a time.

The inquiries' trigram index keeps its GIN pending list, at 256 kB instead of 4 MB. With the
default, the insert that had to flush 4 MB stalled its whole batch (submit's p99 ~130-150 ms
at 32 connections). Without the list (as the subscribers' index since 0005), each inquiry's
~100 trigrams went into the tree one by one: ~0.8 ms a row, a 16-row batch ~13 ms, and
submit fell to ~750 req/s. At 256 kB: ~1,100 req/s, p99 ~40 ms (bench/, 2026-11-28).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_statement_counters"
down_revision: str | None = "0005_subscriber_gin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("inquiries", "subscribers")

# `changed` is the transition table: the inserted rows (INSERT) or the deleted ones (DELETE).
ROW_COUNTS = """
CREATE FUNCTION row_counts_by_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign bigint := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    INSERT INTO row_counts AS c (tbl, status, deleted, shard, n)
    SELECT TG_TABLE_NAME, status, deleted_at IS NOT NULL, (pg_backend_pid() % 16)::smallint,
           sign * count(*)
    FROM changed
    GROUP BY status, deleted_at IS NOT NULL
    ON CONFLICT (tbl, status, deleted, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$
"""

ROLLUP = """
CREATE FUNCTION inquiry_rollup_by_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    sign bigint := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    INSERT INTO inquiry_rollup AS r (bucket, status, shard, n)
    SELECT inquiry_bucket(created_at), status, (pg_backend_pid() % 4)::smallint,
           sign * count(*)
    FROM changed
    WHERE deleted_at IS NULL
    GROUP BY 1, 2
    ON CONFLICT (bucket, status, shard) DO UPDATE SET n = r.n + excluded.n;
    RETURN NULL;
END
$$
"""


def _statement_triggers(table: str, name: str, function: str) -> None:
    for event, transition in (("INSERT", "NEW"), ("DELETE", "OLD")):
        op.execute(
            f"""
            CREATE TRIGGER {table}_{name}_{event.lower()}
            AFTER {event} ON {table}
            REFERENCING {transition} TABLE AS changed
            FOR EACH STATEMENT EXECUTE FUNCTION {function}()
            """
        )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(ROW_COUNTS)
    op.execute(ROLLUP)
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_row_counts_insert_delete ON {table}")
        _statement_triggers(table, "row_counts", "row_counts_by_statement")
    op.execute("DROP TRIGGER inquiries_rollup_insert_delete ON inquiries")
    _statement_triggers("inquiries", "rollup", "inquiry_rollup_by_statement")
    op.execute(
        "ALTER INDEX ix_inquiries_search_trgm SET (fastupdate = on, gin_pending_list_limit = 256)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER INDEX ix_inquiries_search_trgm RESET (fastupdate, gin_pending_list_limit)")
    for table, name, function in (
        ("inquiries", "rollup", "inquiry_rollup_track"),
        ("inquiries", "row_counts", "row_counts_track"),
        ("subscribers", "row_counts", "row_counts_track"),
    ):
        op.execute(f"DROP TRIGGER {table}_{name}_insert ON {table}")
        op.execute(f"DROP TRIGGER {table}_{name}_delete ON {table}")
        op.execute(
            f"""
            CREATE TRIGGER {table}_{name}_insert_delete
            AFTER INSERT OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION {function}()
            """
        )
    op.execute("DROP FUNCTION inquiry_rollup_by_statement()")
    op.execute("DROP FUNCTION row_counts_by_statement()")
