"""Subscriber wire models (API.md section 3). The unsubscribe token is in none of them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from outreach.core.schemas import (
    Email,
    IdStr,
    InModel,
    OptionalName,
    OptionalSource,
    OutModel,
    Page,
    Timestamp,
    patch_schema,
)
from outreach.subscribers.models import SubscriberStatus


class SubscribeIn(InModel):
    email: Email
    name: OptionalName = None
    source: OptionalSource = None


class SubscriberCreate(SubscribeIn):
    pass


class Accepted(OutModel):
    status: Literal["ACCEPTED"]


class Unsubscribed(OutModel):
    status: Literal["UNSUBSCRIBED"]


class UnsubscribeIn(InModel):
    token: Annotated[str, Field(min_length=1, max_length=128)]


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


class SubscriberPage(Page[SubscriberOut]):
    pass


class SubscriberUpdate(InModel):
    model_config = InModel.model_config | {"json_schema_extra": patch_schema("status")}

    name: Annotated[OptionalName, Field(description="`null` clears it")] = None
    status: SubscriberStatus | None = None

    @model_validator(mode="after")
    def _something(self) -> SubscriberUpdate:
        if not self.model_fields_set:
            raise ValueError("give name and/or status")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null")
        return self
