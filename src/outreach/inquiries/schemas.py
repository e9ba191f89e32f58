"""Inquiry wire models (API.md section 3) and the serializers every answer uses."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, model_validator

from outreach.blocklist.schemas import BlockOut
from outreach.core.schemas import (
    CaptchaPayload,
    Email,
    IdStr,
    InModel,
    OptionalPhone,
    OptionalSource,
    OptionalSubject,
    OutModel,
    Page,
    PatchIn,
    Text,
    Timestamp,
    format_time,
)
from outreach.inquiries.models import Action, InquiryStatus, Priority, SpamReason


class InquirySubmit(InModel):
    """The contact form."""

    name: Annotated[Text, Field(min_length=1, max_length=120)]
    email: Email
    message: Annotated[Text, Field(min_length=1, max_length=5000)]
    phone: OptionalPhone = None
    subject: OptionalSubject = None
    source: OptionalSource = None
    website: Annotated[
        str | None,
        Field(
            max_length=2048,
            description="Honeypot: the real form hides this field and leaves it empty",
        ),
    ] = None
    altcha: CaptchaPayload = None


class SubmitOut(OutModel):
    id: IdStr
    status: InquiryStatus
    created_at: Timestamp


class InquiryOut(OutModel):
    id: IdStr
    name: str
    email: str
    phone: str | None
    subject: str | None
    message: str
    source: str | None
    status: InquiryStatus
    note: str | None
    spam_reason: SpamReason | None
    assignee_id: str | None
    priority: Priority
    first_responded_at: Timestamp | None
    resolved_at: Timestamp | None
    client_ip: str | None
    user_agent: str | None
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class InquiryPage(Page[InquiryOut]):
    pass


def submitted_json(inquiry_id: int, created_at: datetime) -> dict[str, Any]:
    """SubmitOut's JSON: the same for every submit, honeypot and blocklist included."""
    return {"id": str(inquiry_id), "status": "SENT", "createdAt": format_time(created_at)}


def inquiry_json(row: Any) -> dict[str, Any]:
    """InquiryOut's JSON of a row (a record, a mapping or the ORM object), without pydantic:
    every route and the `inquiry.sent` event answer with it. tests/inquiries/test_schemas.py
    pins it to InquiryOut, the documented schema."""
    get = partial(getattr, row) if hasattr(row, "_sa_instance_state") else row.__getitem__
    created_at = get("created_at")
    created = format_time(created_at)
    updated = get("updated_at")
    deleted = get("deleted_at")
    return {
        "id": str(get("id")),
        "name": get("name"),
        "email": get("email"),
        "phone": get("phone"),
        "subject": get("subject"),
        "message": get("message"),
        "source": get("source"),
        "status": str(get("status")),
        "note": get("note"),
        "spamReason": get("spam_reason"),
        "assigneeId": get("assignee_id"),
        "priority": str(get("priority")),
        "firstRespondedAt": _time(get("first_responded_at")),
        "resolvedAt": _time(get("resolved_at")),
        "clientIp": get("client_ip"),
        "userAgent": get("user_agent"),
        "createdAt": created,
        "updatedAt": created if updated == created_at else format_time(updated),
        "deletedAt": format_time(deleted) if deleted is not None else None,
    }


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def updated_json(row: Any, updated_by: str | None) -> dict[str, Any]:
    """The `inquiry.updated` event's payload (InquiryEvent)."""
    inquiry = inquiry_json(row)
    return {
        "id": inquiry["id"],
        "status": inquiry["status"],
        "note": inquiry["note"],
        "assigneeId": inquiry["assigneeId"],
        "priority": inquiry["priority"],
        "spamReason": inquiry["spamReason"],
        "updatedAt": inquiry["updatedAt"],
        "deletedAt": inquiry["deletedAt"],
        "updatedBy": updated_by,
    }


class CommentCreate(InModel):
    body: Annotated[Text, Field(min_length=1, max_length=5000)]


class CommentOut(OutModel):
    id: IdStr
    inquiry_id: IdStr
    body: str
    author_id: str | None
    created_at: Timestamp


class CommentPage(Page[CommentOut]):
    pass


def comment_json(row: Any) -> dict[str, Any]:
    """CommentOut's JSON (and the `inquiry.commented` payload)."""
    get = partial(getattr, row) if hasattr(row, "_sa_instance_state") else row.__getitem__
    return {
        "id": str(get("id")),
        "inquiryId": str(get("inquiry_id")),
        "body": get("body"),
        "authorId": get("author_id"),
        "createdAt": format_time(get("created_at")),
    }


class Change(OutModel):
    from_: Annotated[Any, Field(alias="from")]
    to: Any


class HistoryOut(OutModel):
    id: IdStr
    at: Timestamp
    actor_id: str | None
    action: Action
    changes: dict[str, Change]


class HistoryPage(Page[HistoryOut]):
    pass


def history_json(row: Any) -> dict[str, Any]:
    """HistoryOut's JSON of a stored entry (the derived `created` one is built alike)."""
    get = partial(getattr, row) if hasattr(row, "_sa_instance_state") else row.__getitem__
    changes = get("changes")
    return {
        "id": str(get("id")),
        "at": format_time(get("at")),
        "actorId": get("actor_id"),
        "action": str(get("action")),
        "changes": changes if isinstance(changes, dict) else orjson.loads(changes),
    }


SpamMark = Annotated[
    Literal[True] | None,
    Field(description='`true` with `"status": "CANCELLED"` marks it spam (reason `staff`)'),
]


def _spam_needs_cancelled(status: InquiryStatus | None, spam: bool | None) -> None:
    if spam and status is not InquiryStatus.CANCELLED:
        raise ValueError('spam: true goes with "status": "CANCELLED"')


class InquiryUpdate(PatchIn):
    non_null = ("status", "spam", "priority")

    status: InquiryStatus | None = None
    note: Annotated[
        Annotated[Text, Field(max_length=2000)] | None, Field(description="`null` clears it")
    ] = None
    spam: SpamMark = None
    assignee_id: Annotated[
        Annotated[Text, Field(min_length=1, max_length=128)] | None,
        Field(description="The staff member's `sub`; `null` unassigns"),
    ] = None
    priority: Priority | None = None

    @model_validator(mode="after")
    def _spam(self) -> InquiryUpdate:
        _spam_needs_cancelled(self.status, self.spam)
        return self


IdList = Annotated[
    list[Annotated[str, Field(pattern=r"^[0-9]{1,19}$")]],
    Field(min_length=1, max_length=500),
]


BlockWhat = Literal["email", "domain", "ip"]


class BulkStatus(InModel):
    ids: IdList
    status: InquiryStatus
    spam: SpamMark = None
    block: Annotated[
        list[BlockWhat] | None,
        Field(
            max_length=3,
            description="With spam: add the spam inquiries' emails, domains and/or client "
            "addresses to the blocklist",
        ),
    ] = None

    @model_validator(mode="after")
    def _spam(self) -> BulkStatus:
        _spam_needs_cancelled(self.status, self.spam)
        if self.block and not self.spam:
            raise ValueError('block goes with "spam": true')
        return self


class Skipped(OutModel):
    id: str
    reason: str


class BulkStatusOut(OutModel):
    updated: list[str]
    skipped: list[Skipped]
    blocked: Annotated[
        list[BlockOut] | None, Field(description="The entries `block` created (with `block`)")
    ] = None


class InquiryEvent(OutModel):
    """Payload of `inquiry.updated`."""

    id: IdStr
    status: InquiryStatus
    note: str | None
    updated_at: Timestamp
    deleted_at: Timestamp | None
    updated_by: str
