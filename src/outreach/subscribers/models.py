"""The subscribers table."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from outreach.db import Base


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
    # The secret unsubscribe token (see docs/adr/0002). Looked up by its first characters
    # (the selector), then compared in full in constant time.
    unsubscribe_selector: Mapped[str] = mapped_column(String(16))
    unsubscribe_token: Mapped[str] = mapped_column(String(64))
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
