"""The subscribers table."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from outreach.db.base import Base


class SubscriberStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    UNSUBSCRIBED = "UNSUBSCRIBED"


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(120))
    source: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    subscribed_at: Mapped[datetime]
    unsubscribed_at: Mapped[datetime | None]
    # The unsubscribe token is derived from this and TOKEN_SECRET, never stored
    # (subscribers/tokens.py, docs/adr/0002): a dump cannot make a working link.
    unsubscribe_selector: Mapped[str] = mapped_column(String(32))
    # SHA-256 of a token issued before migration 0007, so old links keep working until a
    # new selector is issued (which clears it).
    legacy_token_hash: Mapped[str | None] = mapped_column(String(64))
    search_text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('ACTIVE', 'UNSUBSCRIBED')", name="status"),
        # Emails are stored lower-cased: unique among live rows, case-insensitively.
        Index(
            "uq_subscribers_live_email",
            "email",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        Index("ix_subscribers_unsubscribe_selector", "unsubscribe_selector", unique=True),
        Index("ix_subscribers_status_id", "status", "id"),
        Index("ix_subscribers_created_at", "created_at"),
        Index("ix_subscribers_subscribed_at", "subscribed_at"),
        Index("ix_subscribers_unsubscribed_at", "unsubscribed_at"),
    )
