"""Initial schema: inquiries, subscribers, idempotency keys, Casbin policy.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-24 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"

    op.create_table(
        "inquiries",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("source", sa.String(2048), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("client_ip", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('SENT', 'IN_PROGRESS', 'RESOLVED', 'CANCELLED')",
            name=op.f("ck_inquiries_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inquiries")),
    )
    op.create_index("ix_inquiries_status_id", "inquiries", ["status", "id"])
    op.create_index("ix_inquiries_email_id", "inquiries", ["email", "id"])
    op.create_index("ix_inquiries_created_at", "inquiries", ["created_at"])

    op.create_table(
        "subscribers",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(120), nullable=True),
        sa.Column("source", sa.String(2048), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subscribed_at", TS, nullable=False),
        sa.Column("unsubscribed_at", TS, nullable=True),
        sa.Column("unsubscribe_selector", sa.String(16), nullable=False),
        sa.Column("unsubscribe_token", sa.String(64), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'UNSUBSCRIBED')", name=op.f("ck_subscribers_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscribers")),
    )
    op.create_index(
        "uq_subscribers_live_email",
        "subscribers",
        ["email"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "ix_subscribers_unsubscribe_selector", "subscribers", ["unsubscribe_selector"], unique=True
    )
    op.create_index("ix_subscribers_status_id", "subscribers", ["status", "id"])
    op.create_index("ix_subscribers_created_at", "subscribers", ["created_at"])
    op.create_index("ix_subscribers_subscribed_at", "subscribers", ["subscribed_at"])
    op.create_index("ix_subscribers_unsubscribed_at", "subscribers", ["unsubscribed_at"])

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])

    op.create_table(
        "casbin_rule",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        *(sa.Column(c, sa.String(255), nullable=True) for c in ("ptype", "v0", "v1", "v2")),
        *(sa.Column(c, sa.String(255), nullable=True) for c in ("v3", "v4", "v5")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_casbin_rule")),
    )
    # The adapter itself never prevents a duplicate rule; this index does (LIBRARY-NOTES).
    if postgres:
        op.execute(
            "CREATE UNIQUE INDEX uq_casbin_rule_rule ON casbin_rule "
            "(ptype, v0, v1, v2, v3, v4, v5) NULLS NOT DISTINCT"
        )
        # Substring search (`q`) on large tables: trigram indexes over the case-folded text.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_inquiries_search_trgm ON inquiries "
            "USING gin (search_text gin_trgm_ops)"
        )
        op.execute(
            "CREATE INDEX ix_subscribers_search_trgm ON subscribers "
            "USING gin (search_text gin_trgm_ops)"
        )
    else:
        op.execute(
            "CREATE UNIQUE INDEX uq_casbin_rule_rule ON casbin_rule (coalesce(ptype, ''), "
            "coalesce(v0, ''), coalesce(v1, ''), coalesce(v2, ''), coalesce(v3, ''), "
            "coalesce(v4, ''), coalesce(v5, ''))"
        )


def downgrade() -> None:
    op.drop_table("casbin_rule")
    op.drop_table("idempotency_keys")
    op.drop_table("subscribers")
    op.drop_table("inquiries")
