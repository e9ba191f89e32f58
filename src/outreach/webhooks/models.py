"""Webhook endpoints, the messages queued for them, and the log of delivery attempts."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from outreach.db.base import Base


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # The signing secret encrypted under a key derived from TOKEN_SECRET (webhooks/secrets.py,
    # docs/adr/0010): a dump of this table cannot sign a message.
    secret: Mapped[str] = mapped_column(Text)
    # After a rotation, the old secret keeps signing beside the new one until then.
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None]
    # Start of the current unbroken run of failed attempts (None after a success): 5 days
    # of it disable the endpoint.
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class MessageState(enum.StrEnum):
    QUEUED = "queued"  # an attempt is due (the first, or a retry)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt of the schedule failed
    DROPPED = "dropped"  # its endpoint was deleted or deactivated first


class WebhookMessage(Base):
    """One event for one endpoint: its id (`webhook-id`) and body are the same on every try."""

    __tablename__ = "webhook_messages"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    endpoint_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhook_endpoints.id"))
    event: Mapped[str] = mapped_column(String(64))
    # The exact bytes signed and sent; cleared once the message is settled (it carries
    # personal data, and nothing needs it after the last attempt).
    body: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    # The fan-out that queued it (`inquiry.sent:<id>`), unique per endpoint: the same fan-out
    # run again queues nothing new. None for a message queued by the change's own transaction.
    source: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint("state IN ('queued', 'succeeded', 'failed', 'dropped')", name="state"),
        Index("ix_webhook_messages_endpoint_id_state", "endpoint_id", "state"),
        Index("uq_webhook_messages_endpoint_id_source", "endpoint_id", "source", unique=True),
    )


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(Base):
    """One attempt (`pending`: the first attempt of a message, not made yet)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    endpoint_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhook_endpoints.id"))
    message_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("webhook_messages.id"))
    event: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
        Index("uq_webhook_deliveries_message_id", "message_id", "attempt", unique=True),
    )
