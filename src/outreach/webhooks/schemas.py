"""Webhook wire models (API.md section 13) and the one serializer of each resource.

The secret is in none of the endpoint's forms but the answers of create and rotate-secret.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from outreach.core.schemas import (
    IdStr,
    InModel,
    OutModel,
    Page,
    PatchIn,
    Text,
    Timestamp,
    format_time,
)

# The events of API.md section 6, and the two of section 11 (delivered once emitted).
EVENTS = (
    "inquiry.sent",
    "inquiry.updated",
    "inquiry.assigned",
    "inquiry.commented",
    "subscriber.subscribed",
    "subscriber.unsubscribed",
)
TEST_EVENT = "webhook.test"
EventName = Literal[
    "inquiry.sent",
    "inquiry.updated",
    "inquiry.assigned",
    "inquiry.commented",
    "subscriber.subscribed",
    "subscriber.unsubscribed",
]


def _unique(events: list[str]) -> list[str]:
    return list(dict.fromkeys(events))


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


Url = Annotated[Text, Field(min_length=1, max_length=2048, examples=["https://crm.example/hook"])]
Events = Annotated[
    list[EventName], Field(min_length=1, max_length=len(EVENTS)), AfterValidator(_unique)
]
Description = Annotated[
    Annotated[Text, Field(max_length=500)] | None, BeforeValidator(_blank_to_none)
]


class WebhookCreate(InModel):
    url: Url
    events: Events
    description: Description = None


class WebhookUpdate(PatchIn):
    non_null = ("url", "events", "active")

    url: Url | None = None
    events: Events | None = None
    description: Annotated[Description, Field(description="`null` clears it")] = None
    active: bool | None = None


class WebhookOut(OutModel):
    id: IdStr
    url: str
    events: list[EventName]
    description: str | None
    active: bool
    created_at: Timestamp
    updated_at: Timestamp
    disabled_reason: str | None


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="`whsec_` + base64: shown this once only")


class WebhookPage(Page[WebhookOut]):
    pass


class DeliveryOut(OutModel):
    id: IdStr
    message_id: str = Field(examples=["msg_7266051958845440010"])
    event: str
    attempt: int = Field(ge=1)
    status: Literal["succeeded", "failed", "pending"]
    response_status: int | None
    error: str | None
    duration_ms: int | None
    at: Timestamp


class DeliveryPage(Page[DeliveryOut]):
    pass


class Queued(OutModel):
    status: Literal["QUEUED"]
    message_id: str


def message_key(message_id: int) -> str:
    """The wire id of a message (`webhook-id`, `messageId`)."""
    return f"msg_{message_id}"


def _getter(row: Any) -> Any:
    return partial(getattr, row) if hasattr(row, "_sa_instance_state") else row.__getitem__


def webhook_json(row: Any) -> dict[str, Any]:
    """WebhookOut's JSON of a row (ORM object or mapping); tests pin it to WebhookOut."""
    get = _getter(row)
    return {
        "id": str(get("id")),
        "url": get("url"),
        "events": list(get("events")),
        "description": get("description"),
        "active": bool(get("active")),
        "createdAt": format_time(get("created_at")),
        "updatedAt": format_time(get("updated_at")),
        "disabledReason": get("disabled_reason"),
    }


def delivery_json(row: Any) -> dict[str, Any]:
    """DeliveryOut's JSON of a row; tests pin it to DeliveryOut."""
    get = _getter(row)
    return {
        "id": str(get("id")),
        "messageId": message_key(get("message_id")),
        "event": get("event"),
        "attempt": get("attempt"),
        "status": get("status"),
        "responseStatus": get("response_status"),
        "error": get("error"),
        "durationMs": get("duration_ms"),
        "at": format_time(get("at")),
    }
