"""Spent ALTCHA challenges, when there is no Redis to keep them (API.md section 10)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from outreach.db.base import Base


class CaptchaSpent(Base):
    """A solved challenge accepted once: kept until its salt expires, then purged."""

    __tablename__ = "captcha_spent"

    challenge: Mapped[str] = mapped_column(String(128), primary_key=True)
    # SHA-256 of the Idempotency-Key it came with ("" without): a retry of that request may
    # bring it again.
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_captcha_spent_expires_at", "expires_at"),)
