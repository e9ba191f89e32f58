"""Inquiry wire models (API.md section 3)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from outreach.core.schemas import (
    Email,
    IdStr,
    InModel,
    OptionalPhone,
    OptionalSource,
    OptionalSubject,
    OutModel,
    Page,
    Text,
    Timestamp,
    patch_schema,
)
from outreach.inquiries.models import InquiryStatus


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
    client_ip: str | None
    user_agent: str | None
    created_at: Timestamp
    updated_at: Timestamp
    deleted_at: Timestamp | None


class InquiryPage(Page[InquiryOut]):
    pass


class InquiryUpdate(InModel):
    model_config = InModel.model_config | {"json_schema_extra": patch_schema("status")}

    status: InquiryStatus | None = None
    note: Annotated[
        Annotated[Text, Field(max_length=2000)] | None, Field(description="`null` clears it")
    ] = None

    @model_validator(mode="after")
    def _something(self) -> InquiryUpdate:
        if not self.model_fields_set:
            raise ValueError("give status and/or note")
        if "status" in self.model_fields_set and self.status is None:
            raise ValueError("status cannot be null")
        return self


IdList = Annotated[
    list[Annotated[str, Field(pattern=r"^[0-9]{1,19}$")]],
    Field(min_length=1, max_length=500),
]


class BulkStatus(InModel):
    ids: IdList
    status: InquiryStatus


class Skipped(OutModel):
    id: str
    reason: str


class BulkStatusOut(OutModel):
    updated: list[str]
    skipped: list[Skipped]


class InquiryEvent(OutModel):
    """Payload of `inquiry.updated`."""

    id: IdStr
    status: InquiryStatus
    note: str | None
    updated_at: Timestamp
    deleted_at: Timestamp | None
    updated_by: str
