"""Triage: assignee, priority, response times, internal comments, and the history of changes.

Revision ID: 0009_triage
Revises: 0008_spam
Create Date: 2026-12-01 13:30:00

`priority` is NOT NULL with a default, so existing rows become NORMAL (PostgreSQL stores the
default without rewriting the table). The history has no row for `created`: that entry is
derived from the inquiry itself (docs/adr/0011), so the public submit writes nothing more.
Comments and history entries are read per inquiry, oldest first: both are indexed by
(inquiry_id, id). Response-time statistics read the live, non-spam inquiries that have a
first response (every resolved one has), by creation time: one covering partial index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_triage"
down_revision: str | None = "0008_spam"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
PRIORITIES = "priority IN ('LOW', 'NORMAL', 'HIGH', 'URGENT')"
ACTIONS = "action IN ('created', 'updated', 'deleted', 'restored', 'commented', 'erased')"


def upgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        batch.add_column(sa.Column("assignee_id", sa.String(128), nullable=True))
        batch.add_column(
            sa.Column("priority", sa.String(8), nullable=False, server_default="NORMAL")
        )
        batch.add_column(sa.Column("first_responded_at", TS, nullable=True))
        batch.add_column(sa.Column("resolved_at", TS, nullable=True))
        batch.create_check_constraint(op.f("ck_inquiries_priority"), PRIORITIES)
    op.create_index("ix_inquiries_assignee_id_id", "inquiries", ["assignee_id", "id"])
    # The response-time statistics read, by creation time, the live non-spam inquiries that
    # were answered (every resolved one was): an index-only scan of this partial index.
    responded = "first_responded_at IS NOT NULL AND deleted_at IS NULL AND spam_reason IS NULL"
    op.create_index(
        "ix_inquiries_response_times",
        "inquiries",
        ["created_at"],
        postgresql_include=["first_responded_at", "resolved_at"],
        postgresql_where=sa.text(responded),
        sqlite_where=sa.text(responded),
    )
    op.create_table(
        "inquiry_comments",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("inquiry_id", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("author_id", sa.String(255), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["inquiry_id"],
            ["inquiries.id"],
            name=op.f("fk_inquiry_comments_inquiry_id_inquiries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inquiry_comments")),
    )
    op.create_index("ix_inquiry_comments_inquiry_id_id", "inquiry_comments", ["inquiry_id", "id"])
    op.create_table(
        "inquiry_history",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("inquiry_id", sa.BigInteger(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor_id", sa.String(255), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column(
            "changes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.CheckConstraint(ACTIONS, name=op.f("ck_inquiry_history_action")),
        sa.ForeignKeyConstraint(
            ["inquiry_id"],
            ["inquiries.id"],
            name=op.f("fk_inquiry_history_inquiry_id_inquiries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inquiry_history")),
    )
    op.create_index("ix_inquiry_history_inquiry_id_id", "inquiry_history", ["inquiry_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_inquiry_history_inquiry_id_id", table_name="inquiry_history")
    op.drop_table("inquiry_history")
    op.drop_index("ix_inquiry_comments_inquiry_id_id", table_name="inquiry_comments")
    op.drop_table("inquiry_comments")
    op.drop_index("ix_inquiries_response_times", table_name="inquiries")
    op.drop_index("ix_inquiries_assignee_id_id", table_name="inquiries")
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_constraint("ck_inquiries_priority", type_="check")
        batch.drop_column("resolved_at")
        batch.drop_column("first_responded_at")
        batch.drop_column("priority")
        batch.drop_column("assignee_id")
