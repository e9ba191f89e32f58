"""Privacy wire models (API.md section 14)."""

from __future__ import annotations

from outreach.core.schemas import Email, IdStr, InModel, OutModel
from outreach.inquiries.schemas import CommentOut, HistoryOut, InquiryOut
from outreach.subscribers.schemas import SubscriberOut


class EraseIn(InModel):
    email: Email


class Erased(OutModel):
    inquiries: int
    subscribers: int


class SubjectHistory(HistoryOut):
    inquiry_id: IdStr


class Subject(OutModel):
    email: str
    inquiries: list[InquiryOut]
    subscribers: list[SubscriberOut]
    comments: list[CommentOut]
    history: list[SubjectHistory]
