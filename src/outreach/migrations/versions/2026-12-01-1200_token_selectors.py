"""Unsubscribe tokens are no longer stored: a selector, and a hash of each old token.

Revision ID: 0007_token_selectors
Revises: 0006_statement_counters
Create Date: 2026-12-01 12:00:00

A token is now the selector plus an HMAC of it under TOKEN_SECRET (subscribers/tokens.py,
docs/adr/0002), so a dump of the table cannot unsubscribe anyone. Links already mailed must
keep working: each stored token's SHA-256 goes to `legacy_token_hash` (useless for making a
link), checked when such a token comes back, and cleared when a new selector is issued. The
plaintext column is dropped. The selector column widens for the new 128-bit selectors; the
old 16-character ones stay as they are (they are the rows' keys, not secrets).

Downgrade cannot bring the old tokens back: it issues new random ones, so every link handed
out before it stops working.
"""

import hashlib
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_token_selectors"
down_revision: str | None = "0006_statement_counters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_subscribers = sa.table(
    "subscribers",
    sa.column("id", sa.BigInteger()),
    sa.column("unsubscribe_selector", sa.String()),
    sa.column("unsubscribe_token", sa.String()),
    sa.column("legacy_token_hash", sa.String()),
)


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("legacy_token_hash", sa.String(64), nullable=True))
    if bind.dialect.name == "postgresql":
        # One statement, in the database; the same hash as tokens.legacy_token_hash.
        op.execute(
            "UPDATE subscribers SET legacy_token_hash = "
            "encode(sha256(convert_to(unsubscribe_token, 'UTF8')), 'hex')"
        )
    else:  # SQLite has no sha256(): hashed here (the embedded database is a small one)
        rows = bind.execute(sa.select(_subscribers.c.id, _subscribers.c.unsubscribe_token)).all()
        for start in range(0, len(rows), 1000):
            _update(
                bind,
                [{"row_id": i, "value": _sha256(t)} for i, t in rows[start : start + 1000]],
            )
    # SQLite rebuilds the table here (batch mode); PostgreSQL alters it in place, and widening
    # a varchar does not rewrite it.
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("unsubscribe_token")
        batch.alter_column(
            "unsubscribe_selector",
            existing_type=sa.String(16),
            type_=sa.String(32),
            existing_nullable=False,
        )


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("unsubscribe_token", sa.String(64), nullable=True))
    rows = bind.execute(sa.select(_subscribers.c.id)).scalars().all()
    for start in range(0, len(rows), 1000):
        tokens = [(i, secrets.token_urlsafe(32)) for i in rows[start : start + 1000]]
        bind.execute(
            sa.update(_subscribers)
            .where(_subscribers.c.id == sa.bindparam("row_id"))
            .values(
                unsubscribe_token=sa.bindparam("token"),
                unsubscribe_selector=sa.bindparam("selector"),
            ),
            [{"row_id": i, "token": t, "selector": t[:16]} for i, t in tokens],
        )
    with op.batch_alter_table("subscribers") as batch:
        batch.alter_column("unsubscribe_token", existing_type=sa.String(64), nullable=False)
        batch.alter_column(
            "unsubscribe_selector",
            existing_type=sa.String(32),
            type_=sa.String(16),
            existing_nullable=False,
        )
        batch.drop_column("legacy_token_hash")


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _update(bind: sa.Connection, values: list[dict[str, object]]) -> None:
    bind.execute(
        sa.update(_subscribers)
        .where(_subscribers.c.id == sa.bindparam("row_id"))
        .values(legacy_token_hash=sa.bindparam("value")),
        values,
    )
