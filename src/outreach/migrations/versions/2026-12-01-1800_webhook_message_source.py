"""Webhook messages name what queued them, once per endpoint.

Revision ID: 0014_webhook_message_source
Revises: 0013_mail_claims
Create Date: 2026-12-01 18:00:00

`webhook_messages.source` is the key of the fan-out that queued a message (`inquiry.sent:<id>`,
`subscriber.subscribed:<id>:<job>`), unique per endpoint: a fan-out job run again (its worker
was killed after it committed) queues nothing new, so a receiver never gets one event under
two `webhook-id`s (docs/adr/0010). Messages queued inside the change's own transaction (admin
routes, the test route) have none (NULL: never in conflict).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_webhook_message_source"
down_revision: str | None = "0013_mail_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_messages") as batch:
        batch.add_column(sa.Column("source", sa.String(200), nullable=True))
    op.create_index(
        "uq_webhook_messages_endpoint_id_source",
        "webhook_messages",
        ["endpoint_id", "source"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_webhook_messages_endpoint_id_source", table_name="webhook_messages")
    with op.batch_alter_table("webhook_messages") as batch:
        batch.drop_column("source")
