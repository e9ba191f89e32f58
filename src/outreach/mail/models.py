"""What the mailer remembers: each mail it sent or refused (by key), and a lock row per
address and kind, so the per-address limits hold across replicas (API.md section 12)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.db.base import Base


class MailLog(Base):
    """One row per mail the service decided on. `key` names the mail (the same on every
    retry and for a job run twice), so a mail sent once is not sent again; the rows of one
    address and kind in the last 24 h are what the limits count. Addresses are kept only as
    a SHA-256."""

    __tablename__ = "mail_log"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    address_hash: Mapped[str] = mapped_column(String(64))
    # reserved: counted, not yet accepted by SMTP; sent; limited: not sent (over a limit)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(String(255))
    # While a job hands a reserved mail to SMTP: which job (its id), and until when no other
    # may (mailer.CLAIM).
    claimed_by: Mapped[str | None] = mapped_column(String(24))
    claimed_until: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('reserved', 'sent', 'limited')", name="status"),
        Index("ix_mail_log_kind_address_hash_created_at", "kind", "address_hash", "created_at"),
        Index("ix_mail_log_created_at", "created_at"),
    )


class MailLimit(Base):
    """Locked (upserted) first by every decision about one address and kind: two replicas
    deciding at once take turns, so neither sends past the limit."""

    __tablename__ = "mail_limits"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    touched_at: Mapped[datetime]
