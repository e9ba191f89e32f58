"""The inquiries table."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outreach.db.base import Base


class SpamReason(enum.StrEnum):
    """Why an inquiry is spam (API.md section 10); every spam inquiry is CANCELLED."""

    HONEYPOT = "honeypot"
    BLOCKLIST = "blocklist"
    STAFF = "staff"


class InquiryStatus(enum.StrEnum):
    SENT = "SENT"
    IN_PROGRESS = "IN_PROGRESS"
    RESOLVED = "RESOLVED"
    CANCELLED = "CANCELLED"


# API.md section 3: which status may follow which.
TRANSITIONS: dict[InquiryStatus, frozenset[InquiryStatus]] = {
    InquiryStatus.SENT: frozenset(
        {InquiryStatus.IN_PROGRESS, InquiryStatus.RESOLVED, InquiryStatus.CANCELLED}
    ),
    InquiryStatus.IN_PROGRESS: frozenset(
        {InquiryStatus.SENT, InquiryStatus.RESOLVED, InquiryStatus.CANCELLED}
    ),
    InquiryStatus.RESOLVED: frozenset({InquiryStatus.IN_PROGRESS}),
    InquiryStatus.CANCELLED: frozenset({InquiryStatus.SENT}),
}


class Inquiry(Base):
    __tablename__ = "inquiries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    subject: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    spam_reason: Mapped[str | None] = mapped_column(String(16))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    # Case-folded name, email, subject and message: the `q` filter searches this.
    search_text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(
            "status IN ('SENT', 'IN_PROGRESS', 'RESOLVED', 'CANCELLED')", name="status"
        ),
        CheckConstraint(
            "spam_reason IS NULL OR "
            "(spam_reason IN ('honeypot', 'blocklist', 'staff') AND status = 'CANCELLED')",
            name="spam_reason",
        ),
        Index("ix_inquiries_status_id", "status", "id"),
        Index("ix_inquiries_email_id", "email", "id"),
        Index("ix_inquiries_created_at", "created_at"),
    )
