"""The subscribers table, and the values each change of state writes (one rule, one place)."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import BigInteger, CheckConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from outreach.core.schemas import format_time
from outreach.core.text import search_key
from outreach.db.base import Base
from outreach.subscribers.tokens import new_selector


class SubscriberStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    # Double opt-in (API.md section 12): subscribed, not yet confirmed.
    PENDING = "PENDING"


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
    # Double opt-in: the confirm token is derived from this selector like the unsubscribe
    # token (another purpose), never stored; it works until `confirm_expires_at`, and dies
    # when the subscriber leaves (cleared).
    confirm_selector: Mapped[str | None] = mapped_column(String(32))
    confirm_expires_at: Mapped[datetime | None]
    # The language of the mails sent to this address (vi, en): the Accept-Language of its
    # latest public subscribe; NULL (Vietnamese) when staff added it. Not part of its JSON.
    language: Mapped[str | None] = mapped_column(String(8))
    search_text: Mapped[str] = mapped_column(Text)
    # Its consents as JSON text, oldest first (API.md section 14; the API shows them newest
    # first): each subscription appends one (models.consent_record).
    consent: Mapped[str] = mapped_column(Text, server_default="[]")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('ACTIVE', 'UNSUBSCRIBED', 'PENDING')", name="status"),
        # Emails are stored lower-cased: unique among live rows, case-insensitively.
        Index(
            "uq_subscribers_live_email",
            "email",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        Index("ix_subscribers_unsubscribe_selector", "unsubscribe_selector", unique=True),
        Index("ix_subscribers_confirm_selector", "confirm_selector", unique=True),
        Index("ix_subscribers_email", "email"),
        Index("ix_subscribers_status_id", "status", "id"),
        Index("ix_subscribers_created_at", "created_at"),
        Index("ix_subscribers_subscribed_at", "subscribed_at"),
        Index("ix_subscribers_unsubscribed_at", "unsubscribed_at"),
    )


def subscribed(now: Any) -> dict[str, Any]:
    """A subscription, new or back: ACTIVE from `now`, with a new selector (which kills the
    old token, derived or legacy). Every path writes these: the public upsert (new row and
    resubscribe), the admin create, and PATCH to ACTIVE."""
    return {
        "status": SubscriberStatus.ACTIVE.value,
        "subscribed_at": now,
        "unsubscribed_at": None,
        "unsubscribe_selector": new_selector(),
        "legacy_token_hash": None,
        "updated_at": now,
    }


def unsubscribed(now: Any) -> dict[str, Any]:
    """Leaving: the public token route and PATCH to UNSUBSCRIBED. A confirm token dies too."""
    return {
        "status": SubscriberStatus.UNSUBSCRIBED.value,
        "unsubscribed_at": now,
        "updated_at": now,
        "confirm_selector": None,
        "confirm_expires_at": None,
    }


# A confirm link works for 72 hours (API.md section 12).
CONFIRM_TTL = timedelta(hours=72)


def pending(now: datetime) -> dict[str, Any]:
    """Double opt-in: asked for, not yet confirmed. A new confirm selector valid 72 h (the
    grouped upsert keeps the one already mailed while it is valid: repository.py), and a
    new unsubscribe selector (which also names the request in a grouped batch)."""
    return {
        "status": SubscriberStatus.PENDING.value,
        "unsubscribe_selector": new_selector(),
        "legacy_token_hash": None,
        "confirm_selector": new_selector(),
        "confirm_expires_at": now + CONFIRM_TTL,
        "updated_at": now,
    }


class ConsentMethod(enum.StrEnum):
    SINGLE = "single"  # the public form, single opt-in
    DOUBLE = "double"  # the public form, confirmed by mail (confirmedAt)
    STAFF = "staff"  # added (or subscribed again) by staff


def consent_record(
    now: datetime,
    method: ConsentMethod,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """One consent (API.md section 14), as the API shows it: recorded at the moment of the
    subscription; staff's carry no address or user agent; double opt-in's `confirmedAt` is
    set when the address confirms."""
    return {
        "at": format_time(now),
        "ip": ip,
        "userAgent": user_agent,
        "source": source,
        "method": method.value,
        "confirmedAt": None,
    }


def appended(kept: str, record: dict[str, Any]) -> str:
    """The `consent` column with one more record (the ORM paths; the grouped upsert does the
    same in SQL: repository._appended)."""
    return orjson.dumps([*orjson.loads(kept), record]).decode()


def consents(record: dict[str, Any]) -> str:
    """The `consent` column of a new subscriber: one record (JSON text)."""
    return orjson.dumps([record]).decode()


def new_row(
    subscriber_id: int,
    email: str,
    name: str | None,
    source: str | None,
    now: datetime,
    *,
    confirm: bool = False,
    language: str | None = None,
    consent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every column of a new subscriber (public subscribe and admin create): ACTIVE, or
    with `confirm` (double opt-in) PENDING, its `subscribed_at` set again at confirmation.
    `consent`: its consent record (a resubscribe appends it to the ones kept)."""
    row = {
        "id": subscriber_id,
        "email": email,
        "name": name,
        "source": source,
        "consent": consents(consent) if consent is not None else "[]",
        "search_text": search_key(email, name),
        "created_at": now,
        "deleted_at": None,
        "confirm_selector": None,
        "confirm_expires_at": None,
        "language": language,
        **subscribed(now),
    }
    if confirm:
        row.update(pending(now))
    return row
