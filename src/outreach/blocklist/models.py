"""The blocklist table (API.md section 10): configuration, so entries are deleted for real."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outreach.db.base import Base


class BlockKind(enum.StrEnum):
    EMAIL = "email"  # an exact address, case-insensitive
    DOMAIN = "domain"  # an address's domain or any subdomain of it
    IP = "ip"  # an address or a CIDR block, IPv4 or IPv6


class BlocklistEntry(Base):
    __tablename__ = "blocklist"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(8))
    # Normalized (values.normalize): lower-cased addresses and domains, canonical networks.
    value: Mapped[str] = mapped_column(String(254))
    reason: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("kind IN ('email', 'domain', 'ip')", name="kind"),
        UniqueConstraint("kind", "value"),
    )
