"""Blocklist wire models (API.md section 10) and the one serializer every answer uses."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from outreach.blocklist.models import BlockKind
from outreach.blocklist.values import normalize
from outreach.core.schemas import (
    IdStr,
    InModel,
    OptionalReason,
    OutModel,
    Page,
    Timestamp,
    format_time,
)


class BlockCreate(InModel):
    kind: BlockKind
    value: Annotated[str, Field(min_length=1, max_length=254, description="Normalized when stored")]
    reason: OptionalReason = None
    expires_at: Annotated[
        datetime | None, Field(description="RFC 3339, in the future; it stops matching then")
    ] = None

    @field_validator("value")
    @classmethod
    def _valid_for_kind(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        return normalize(kind, value) if isinstance(kind, BlockKind) else value

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("needs a time zone offset (RFC 3339)")
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise ValueError("must lie within years 1..9999 in UTC") from None
        if value <= datetime.now(UTC):
            raise ValueError("must be in the future")
        return value


class BlockOut(OutModel):
    id: IdStr
    kind: BlockKind
    value: str
    reason: str | None
    created_by: str | None
    created_at: Timestamp
    expires_at: Timestamp | None


class BlockPage(Page[BlockOut]):
    pass


def block_json(row: Any) -> dict[str, Any]:
    """BlockOut's JSON of a row or the ORM object (tests pin it to BlockOut)."""
    get = partial(getattr, row) if hasattr(row, "_sa_instance_state") else row.__getitem__
    expires = get("expires_at")
    return {
        "id": str(get("id")),
        "kind": str(get("kind")),
        "value": get("value"),
        "reason": get("reason"),
        "createdBy": get("created_by"),
        "createdAt": format_time(get("created_at")),
        "expiresAt": format_time(expires) if expires is not None else None,
    }
