"""Subscribers' trigram index without the GIN pending list: no flush stalls on subscribe.

Revision ID: 0005_subscriber_gin
Revises: 0004_counter_shards
Create Date: 2026-11-24 13:00:00

Every new subscriber is a GIN insert. With `fastupdate` on, inserts go to a pending list
that the next unlucky insert flushes: at 32 connections subscribe's p99 was ~140-170 ms;
with it off, ~33 ms at the same rate (bench/, measured 2026-11-24). Inquiries keep the
default: their INSERTs are group-committed, which the pending list serves well.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_subscriber_gin"
down_revision: str | None = "0004_counter_shards"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX ix_subscribers_search_trgm SET (fastupdate = off)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX ix_subscribers_search_trgm RESET (fastupdate)")
