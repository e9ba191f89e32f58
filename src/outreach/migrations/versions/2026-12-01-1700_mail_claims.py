"""A claim on a reserved mail while one worker sends it.

Revision ID: 0013_mail_claims
Revises: 0012_privacy
Create Date: 2026-12-01 17:00:00

`mail_log.claimed_by` / `claimed_until`: the job that is about to hand a reserved mail to
SMTP, and until when; cleared when that attempt fails. Two jobs for the same mail (a fan-out
run twice after a crash) then never send it at the same time: the second waits for its
retry and finds it sent. The same job taken over after its worker died (same id) may claim
again at once; a claim of anything else lapses on its own (mail/mailer.py CLAIM).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_mail_claims"
down_revision: str | None = "0012_privacy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mail_log") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(24), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mail_log") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
