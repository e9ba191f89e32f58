"""Personal data: consent records on subscribers, and when an inquiry's data was erased.

Revision ID: 0012_privacy
Revises: 0011_webhooks
Create Date: 2026-12-01 16:00:00

`subscribers.consent` is the history of a subscriber's consents as JSON text, oldest first
(the API shows it newest first): a subscribe appends to it in its own grouped statement,
so it costs no other statement; erasing a person empties it. Subscribers from before this
migration have none recorded (`[]`): nothing says how they consented.
`inquiries.erased_at` marks an inquiry whose personal data was erased, by a request or by the
retention job: the job's partial index lists what it has still to do.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_privacy"
down_revision: str | None = "0011_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("consent", sa.Text(), nullable=False, server_default="[]"))
    with op.batch_alter_table("inquiries") as batch:
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    # An erase finds every subscriber of an address, deleted ones too (the unique index
    # covers live rows only).
    op.create_index("ix_subscribers_email", "subscribers", ["email"])
    op.create_index(
        "ix_inquiries_unerased_created_at",
        "inquiries",
        ["created_at"],
        postgresql_where=sa.text("erased_at IS NULL"),
        sqlite_where=sa.text("erased_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_inquiries_unerased_created_at", table_name="inquiries")
    op.drop_index("ix_subscribers_email", table_name="subscribers")
    with op.batch_alter_table("inquiries") as batch:
        batch.drop_column("erased_at")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("consent")
