"""The inquiries table."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from outreach.db.base import Base


class SpamReason(enum.StrEnum):
    """Why an inquiry is spam (API.md section 10); every spam inquiry is CANCELLED."""

    HONEYPOT = "honeypot"
    BLOCKLIST = "blocklist"
    STAFF = "staff"


class Priority(enum.StrEnum):
    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    URGENT = "URGENT"


class Action(enum.StrEnum):
    """What a history entry records (API.md section 11)."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    RESTORED = "restored"
    COMMENTED = "commented"
    ERASED = "erased"


# The fields whose changes the history records, and inquiry.updated announces.
TRACKED = ("status", "note", "assignee_id", "priority", "spam_reason")


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


_RESPONDED = "first_responded_at IS NOT NULL AND deleted_at IS NULL AND spam_reason IS NULL"


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
    # Triage (API.md section 11): the staff member's `sub`, and the response times' ends.
    assignee_id: Mapped[str | None] = mapped_column(String(128))
    priority: Mapped[str] = mapped_column(String(8), server_default="NORMAL")
    first_responded_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    # When its personal data was erased (a request, or the retention job); not in its JSON.
    erased_at: Mapped[datetime | None]
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
        CheckConstraint("priority IN ('LOW', 'NORMAL', 'HIGH', 'URGENT')", name="priority"),
        Index("ix_inquiries_status_id", "status", "id"),
        Index("ix_inquiries_assignee_id_id", "assignee_id", "id"),
        Index(
            "ix_inquiries_unerased_created_at",
            "created_at",
            postgresql_where=text("erased_at IS NULL"),
            sqlite_where=text("erased_at IS NULL"),
        ),
        Index(
            "ix_inquiries_response_times",
            "created_at",
            postgresql_include=["first_responded_at", "resolved_at"],
            postgresql_where=text(_RESPONDED),
            sqlite_where=text(_RESPONDED),
        ),
        Index("ix_inquiries_email_id", "email", "id"),
        Index("ix_inquiries_created_at", "created_at"),
    )


class InquiryComment(Base):
    """An internal note by staff on an inquiry, never shown to the visitor."""

    __tablename__ = "inquiry_comments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    inquiry_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("inquiries.id"))
    body: Mapped[str] = mapped_column(Text)
    author_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_inquiry_comments_inquiry_id_id", "inquiry_id", "id"),)


class InquiryHistory(Base):
    """One change of an inquiry: written in the transaction of the change it records. The
    `created` entry is not stored but derived from the inquiry (service.history)."""

    __tablename__ = "inquiry_history"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    inquiry_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("inquiries.id"))
    at: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))
    # {field: {"from": ..., "to": ...}} with API names (status, note, assigneeId, ...).
    changes: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))

    __table_args__ = (
        CheckConstraint(
            "action IN ('created', 'updated', 'deleted', 'restored', 'commented', 'erased')",
            name="action",
        ),
        Index("ix_inquiry_history_inquiry_id_id", "inquiry_id", "id"),
    )
