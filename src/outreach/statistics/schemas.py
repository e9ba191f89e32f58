"""Statistics wire models."""

from __future__ import annotations

from typing import Literal

from outreach.core.schemas import OutModel

Interval = Literal["day", "week", "month"]


class Range(OutModel):
    from_: str
    to: str
    interval: Interval
    tz: str

    model_config = OutModel.model_config | {
        "alias_generator": lambda n: "from" if n == "from_" else n
    }


class InquiryBucket(OutModel):
    bucket: str
    count: int


class ByStatus(OutModel):
    SENT: int
    IN_PROGRESS: int
    RESOLVED: int
    CANCELLED: int

    model_config = OutModel.model_config | {"alias_generator": None}


class InquiryStatistics(OutModel):
    range: Range
    total: int
    by_status: ByStatus
    series: list[InquiryBucket]


class SubscriberBucket(OutModel):
    bucket: str
    subscribed: int
    unsubscribed: int


class SubscriberStatistics(OutModel):
    range: Range
    active: int
    unsubscribed: int
    pending: int  # double opt-in: subscribed, not yet confirmed (API.md section 12)
    series: list[SubscriberBucket]
