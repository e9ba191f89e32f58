"""Spam defense: a reason on every spam inquiry, the blocklist, spent captcha challenges.

Revision ID: 0008_spam
Revises: 0007_token_selectors
Create Date: 2026-12-01 13:00:00

`inquiries.spam_reason` is NULL or honeypot / blocklist / staff, and only a CANCELLED inquiry
may have one (API.md section 10). Honeypot hits stored before this migration keep NULL: they
cannot be told apart from other cancelled inquiries. The blocklist is configuration (entries
are deleted for real); `kind` + `value` is unique, values are stored normalized. A solved
ALTCHA challenge is accepted once: without Redis the spent ones are kept in
`captcha_spent` until their salt expires.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_spam"
down_revision: str | None = "0007_token_selectors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SPAM_CHECK = (
    "spam_reason IS NULL OR "
    "(spam_reason IN ('honeypot', 'blocklist', 'staff') AND status = 'CANCELLED')"
)


def upgrade() -> None:
    with op.batch_alter_table("inquiries") as batch:
        batch.add_column(sa.Column("spam_reason", sa.String(16), nullable=True))
        batch.create_check_constraint(op.f("ck_inquiries_spam_reason"), SPAM_CHECK)
    op.create_table(
        "blocklist",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.String(254), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('email', 'domain', 'ip')", name=op.f("ck_blocklist_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocklist")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_blocklist_kind")),
    )
    op.create_table(
        "captcha_spent",
        sa.Column("challenge", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("challenge", name=op.f("pk_captcha_spent")),
    )
    op.create_index("ix_captcha_spent_expires_at", "captcha_spent", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_captcha_spent_expires_at", table_name="captcha_spent")
    op.drop_table("captcha_spent")
    op.drop_table("blocklist")
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_constraint("ck_inquiries_spam_reason", type_="check")
        batch.drop_column("spam_reason")
