"""Subscriber wire models (API.md section 3) and the one serializer every answer uses.

The unsubscribe token is in none of them.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field

from outreach.core.schemas import (
    CaptchaPayload,
    Email,
    IdStr,
    InModel,
    OptionalName,
    OptionalSource,
    OutModel,
    Page,
    PatchIn,
    Timestamp,
    format_time,
)
from outreach.subscribers.models import SubscriberStatus


class SubscribeIn(InModel):
    email: Email
    name: OptionalName = None
    source: OptionalSource = None
    altcha: CaptchaPayload = None


class SubscriberCreate(InModel):
    email: Email
    name: OptionalName = None
    source: OptionalSource = None


class Accepted(OutModel):
    status: Literal["ACCEPTED"]


class Unsubscribed(OutModel):
    status: Literal["UNSUBSCRIBED"]


class UnsubscribeIn(InModel):
    token: Annotated[str, Field(min_length=1, max_length=128)]


class ConfirmIn(UnsubscribeIn):
    pass


class Confirmed(OutModel):
    status: Literal["ACTIVE"]


class Consent(OutModel):
    """One consent, as recorded when the person subscribed (API.md section 14)."""

    at: Timestamp
    ip: str | None
    user_agent: str | None
    source: str | None
    method: Literal["single", "double", "staff"]
    confirmed_at: Timestamp | None


class SubscriberOut(OutModel):
    id: IdStr
    email: str
    name: str | None
    source: str | None
    status: SubscriberStatus
    subscribed_at: Timestamp
    unsubscribed_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None
    consent: Annotated[list[Consent], Field(description="Its consents, newest first")]


class SubscriberPage(Page[SubscriberOut]):
    pass


def subscriber_json(row: Any) -> dict[str, Any]:
    """SubscriberOut's JSON of a row (a record, a mapping or the ORM object), without
    pydantic: every route and event answers with it. tests/subscribers/test_schemas.py pins
    it to SubscriberOut, the documented schema."""
    get = partial(getattr, row) if hasattr(row, "_sa_instance_state") else row.__getitem__
    unsubscribed, deleted = get("unsubscribed_at"), get("deleted_at")
    created, updated, subscribed = get("created_at"), get("updated_at"), get("subscribed_at")
    created_text = format_time(created)  # a new subscriber's three times are one: format once
    return {
        "id": str(get("id")),
        "email": get("email"),
        "name": get("name"),
        "source": get("source"),
        "status": str(get("status")),
        "subscribedAt": created_text if subscribed == created else format_time(subscribed),
        "unsubscribedAt": format_time(unsubscribed) if unsubscribed is not None else None,
        "createdAt": created_text,
        "updatedAt": created_text if updated == created else format_time(updated),
        "deletedAt": format_time(deleted) if deleted is not None else None,
        "consent": orjson.loads(get("consent"))[::-1],  # stored oldest first
    }


class SubscriberUpdate(PatchIn):
    non_null = ("status",)

    name: Annotated[OptionalName, Field(description="`null` clears it")] = None
    # PENDING is reached by a double opt-in subscribe only (API.md section 12).
    status: Literal["ACTIVE", "UNSUBSCRIBED"] | None = None
