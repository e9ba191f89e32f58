"""Live inquiries per 15-minute UTC bucket and status, kept by a trigger, for the statistics.

Revision ID: 0003_inquiry_rollup
Revises: 0002_row_counts
Create Date: 2026-11-24 12:00:00

PostgreSQL only. Grouping a year of 1,000,000 inquiries by local day read every row (~500 ms
here); the rollup has 35,040 buckets a year (x 4 shards so that concurrent writers rarely
wait on one row) and local days are sums of them, because every
time zone in use today is offset from UTC by a multiple of 15 minutes. The statistics fall
back to the rows for a range whose edges are not on 15-minute boundaries.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003_inquiry_rollup"
down_revision: str | None = "0002_row_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE TABLE inquiry_rollup (
            bucket timestamptz NOT NULL,
            status text NOT NULL,
            shard smallint NOT NULL,
            n bigint NOT NULL DEFAULT 0,
            CONSTRAINT pk_inquiry_rollup PRIMARY KEY (bucket, status, shard)
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION inquiry_bucket(ts timestamptz) RETURNS timestamptz
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
        $$ SELECT to_timestamp(floor(extract(epoch FROM ts) / 900) * 900) $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION inquiry_rollup_track() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.deleted_at IS NULL THEN
                INSERT INTO inquiry_rollup AS r (bucket, status, shard, n)
                VALUES (inquiry_bucket(OLD.created_at), OLD.status, (OLD.id % 4)::smallint, -1)
                ON CONFLICT (bucket, status, shard) DO UPDATE SET n = r.n - 1;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.deleted_at IS NULL THEN
                INSERT INTO inquiry_rollup AS r (bucket, status, shard, n)
                VALUES (inquiry_bucket(NEW.created_at), NEW.status, (NEW.id % 4)::smallint, 1)
                ON CONFLICT (bucket, status, shard) DO UPDATE SET n = r.n + 1;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER inquiries_rollup_insert_delete
        AFTER INSERT OR DELETE ON inquiries
        FOR EACH ROW EXECUTE FUNCTION inquiry_rollup_track()
        """
    )
    op.execute(
        """
        CREATE TRIGGER inquiries_rollup_update
        AFTER UPDATE OF status, deleted_at, created_at ON inquiries
        FOR EACH ROW
        WHEN (OLD.status IS DISTINCT FROM NEW.status
              OR (OLD.deleted_at IS NULL) IS DISTINCT FROM (NEW.deleted_at IS NULL)
              OR OLD.created_at IS DISTINCT FROM NEW.created_at)
        EXECUTE FUNCTION inquiry_rollup_track()
        """
    )
    op.execute(
        """
        INSERT INTO inquiry_rollup (bucket, status, shard, n)
        SELECT inquiry_bucket(created_at), status, (id % 4)::smallint, count(*)
        FROM inquiries WHERE deleted_at IS NULL GROUP BY 1, 2, 3
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS inquiries_rollup_update ON inquiries")
    op.execute("DROP TRIGGER IF EXISTS inquiries_rollup_insert_delete ON inquiries")
    op.execute("DROP FUNCTION IF EXISTS inquiry_rollup_track()")
    op.execute("DROP FUNCTION IF EXISTS inquiry_bucket(timestamptz)")
    op.execute("DROP TABLE IF EXISTS inquiry_rollup")
