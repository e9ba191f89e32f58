"""Personal data (API.md section 14): what is held about an address, and erasing it.

An erase is one transaction, irreversible and complete: in every inquiry with the address,
its name, email, phone, subject, message, source, note, client address and user agent are
replaced, the bodies of its comments and the notes in its history too, and its search text
is rebuilt from what is left (the trigram index then finds nothing of the old address);
every subscriber with the address is erased the same way, UNSUBSCRIBED, its tokens killed and
its consents removed. Counts and statistics stay: statuses, creation and deletion times are
kept. The erase is recorded in each inquiry's history (`erased`, with the actor) and
logged with its counts, never with the address. Open portals get `inquiry.updated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.core.text import search_key
from outreach.db.base import after_commit, utcnow
from outreach.inquiries.models import Action, Inquiry, InquiryComment, InquiryHistory
from outreach.inquiries.schemas import comment_json, history_json, inquiry_json
from outreach.inquiries.service import created_entry
from outreach.inquiries.service import inquiry as inquiry_service
from outreach.state import State
from outreach.subscribers.models import Subscriber, SubscriberStatus, unsubscribed
from outreach.subscribers.schemas import subscriber_json
from outreach.subscribers.tokens import new_selector

log = structlog.get_logger("outreach.privacy")

ERASED = "[erased]"


def erased_email(row_id: int) -> str:
    return f"erased-{row_id}@invalid"


async def _inquiries(session: AsyncSession, email: str, *, lock: bool) -> list[Inquiry]:
    stmt = select(Inquiry).where(Inquiry.email == email).order_by(Inquiry.id)
    return list((await session.scalars(stmt.with_for_update() if lock else stmt)).all())


async def _subscribers(session: AsyncSession, email: str, *, lock: bool) -> list[Subscriber]:
    stmt = select(Subscriber).where(Subscriber.email == email).order_by(Subscriber.id)
    return list((await session.scalars(stmt.with_for_update() if lock else stmt)).all())


async def subject(session: AsyncSession, email: str) -> dict[str, Any]:
    """Everything held about `email`, deleted rows included; tokens excepted (they are not
    stored: docs/adr/0002)."""
    inquiries = await _inquiries(session, email, lock=False)
    ids = [i.id for i in inquiries]
    comments = (
        await session.scalars(
            select(InquiryComment)
            .where(InquiryComment.inquiry_id.in_(ids))
            .order_by(InquiryComment.id)
        )
    ).all()
    stored = (
        await session.scalars(
            select(InquiryHistory)
            .where(InquiryHistory.inquiry_id.in_(ids))
            .order_by(InquiryHistory.id)
        )
    ).all()
    history: list[dict[str, Any]] = []
    for inquiry in inquiries:
        own = [h for h in stored if h.inquiry_id == inquiry.id]
        entries = [created_entry(inquiry, [h.changes for h in own])]
        entries += [history_json(h) for h in own]
        history += [{**e, "inquiryId": str(inquiry.id)} for e in entries]
    return {
        "email": email,
        "inquiries": [inquiry_json(i) for i in inquiries],
        "subscribers": [subscriber_json(s) for s in await _subscribers(session, email, lock=False)],
        "comments": [comment_json(c) for c in comments],
        "history": history,
    }


async def erase_inquiries(
    session: AsyncSession,
    state: State,
    inquiries: Sequence[Inquiry],
    actor: str | None,
    now: datetime,
) -> None:
    """Erase these (locked) inquiries' personal data in the session's transaction: the
    request's erase and the retention job share this."""
    ids = [i.id for i in inquiries]
    if not ids:
        return
    for inquiry in inquiries:
        inquiry.name = ERASED
        inquiry.email = erased_email(inquiry.id)
        inquiry.phone = None
        inquiry.subject = None
        inquiry.message = ERASED
        inquiry.source = None
        inquiry.note = None
        inquiry.client_ip = None
        inquiry.user_agent = None
        inquiry.search_text = search_key(inquiry.name, inquiry.email, None, inquiry.message)
        inquiry.erased_at = inquiry.updated_at = now
    for comment in await session.scalars(
        select(InquiryComment).where(InquiryComment.inquiry_id.in_(ids))
    ):
        comment.body = ERASED
    for entry in await session.scalars(
        select(InquiryHistory).where(InquiryHistory.inquiry_id.in_(ids))
    ):
        if "note" in entry.changes:
            entry.changes = {
                **entry.changes,
                "note": {
                    k: None if v is None else ERASED for k, v in entry.changes["note"].items()
                },
            }
    for inquiry in inquiries:
        # `changes` stays empty: it would otherwise hold what was erased.
        await inquiry_service.record(session, state, inquiry, actor, Action.ERASED, {}, now)
    await session.flush()


async def erase_subscribers(
    session: AsyncSession, state: State, subscribers: Sequence[Subscriber], now: datetime
) -> None:
    for row in subscribers:
        was_active = row.status == SubscriberStatus.ACTIVE.value and row.deleted_at is None
        if row.status != SubscriberStatus.UNSUBSCRIBED.value:
            for name, value in unsubscribed(now).items():
                setattr(row, name, value)
        row.email = erased_email(row.id)
        row.name = None
        row.source = None
        row.search_text = search_key(row.email)
        row.unsubscribe_selector = new_selector()  # the tokens die with their selectors
        row.legacy_token_hash = None
        row.confirm_selector = None
        row.confirm_expires_at = None
        row.language = None
        row.consent = "[]"
        row.updated_at = now
        if was_active:
            payload = subscriber_json(row)
            await state.outbox(session, state, "subscriber.unsubscribed", payload)
            after_commit(session, _announce(state, payload))
    await session.flush()


def _announce(state: State, payload: dict[str, Any]) -> Any:
    def publish() -> None:
        state.metrics.subscriber_event["unsubscribed"].inc()
        state.events.publish("subscriber.unsubscribed", payload, subscriberId=payload["id"])

    return publish


async def erase(
    session: AsyncSession, state: State, email: str, actor: str | None
) -> dict[str, int]:
    """Erase everything about `email` (one transaction); how many rows were erased."""
    now = utcnow()
    inquiries = await _inquiries(session, email, lock=True)
    subscribers = await _subscribers(session, email, lock=True)
    await erase_inquiries(session, state, inquiries, actor, now)
    await erase_subscribers(session, state, subscribers, now)
    counts = {"inquiries": len(inquiries), "subscribers": len(subscribers)}
    after_commit(
        session,
        lambda: log.info("Personal data erased", erasedBy=actor or "-", **counts),
    )
    return counts
