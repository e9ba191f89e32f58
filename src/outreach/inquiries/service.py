"""Inquiry rules: submit (with the honeypot), transitions, bulk status, soft delete."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.auth.principal import AuthPrincipal
from outreach.blocklist.models import BlockKind
from outreach.blocklist.service import blocklist as blocklist_service
from outreach.blocklist.values import domain_of, normalize
from outreach.core.errors import InvalidTransition, NotFound
from outreach.core.schemas import parse_id
from outreach.core.text import search_key
from outreach.db.base import after_commit, utcnow
from outreach.db.fast import FastConn
from outreach.db.listing import ListQuery, page_body
from outreach.idempotency.service import Outcome, run_once
from outreach.inquiries import repository
from outreach.inquiries.models import TRANSITIONS, Inquiry, InquiryStatus, SpamReason
from outreach.inquiries.schemas import (
    BulkStatus,
    InquirySubmit,
    InquiryUpdate,
    inquiry_json,
    submitted_json,
    updated_json,
)
from outreach.state import State


def spam_reason(body: InquirySubmit, *, blocked: bool) -> SpamReason | None:
    """Why a submit is spam: a filled honeypot, or a sender on the blocklist."""
    if body.website and body.website.strip():
        return SpamReason.HONEYPOT
    return SpamReason.BLOCKLIST if blocked else None


def new_row(
    inquiry_id: int,
    body: InquirySubmit,
    *,
    client_ip: str | None,
    user_agent: str | None,
    spam: SpamReason | None,
) -> dict[str, Any]:
    """Every column of a submitted inquiry; spam is stored CANCELLED with its reason."""
    now = utcnow()
    return {
        "id": inquiry_id,
        "name": body.name,
        "email": body.email,
        "phone": body.phone,
        "subject": body.subject,
        "message": body.message,
        "source": body.source,
        "status": InquiryStatus.SENT if spam is None else InquiryStatus.CANCELLED,
        "note": None,
        "spam_reason": spam,
        "client_ip": client_ip,
        "user_agent": user_agent,
        "search_text": search_key(body.name, body.email, body.subject, body.message),
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
    }


CHANGED, UNCHANGED, INVALID = "changed", "unchanged", "invalid-transition"


def move(inquiry: Inquiry, status: InquiryStatus, *, spam: bool) -> str:
    """The one rule of a status change, for PATCH and bulk-status alike (API.md sections 3
    and 10): CHANGED (applied), UNCHANGED (a no-op) or INVALID (not an allowed transition).

    `spam` (with CANCELLED) marks it spam by staff: on an inquiry already CANCELLED with no
    reason that is a change; on one with a reason, a no-op. Leaving CANCELLED clears the
    reason.
    """
    current = InquiryStatus(inquiry.status)
    if status == current:
        if spam and inquiry.spam_reason is None:
            inquiry.spam_reason = SpamReason.STAFF
            return CHANGED
        return UNCHANGED
    if status not in TRANSITIONS[current]:
        return INVALID
    inquiry.status = status
    inquiry.spam_reason = SpamReason.STAFF if spam else None
    return CHANGED


def block_pairs(inquiries: Iterable[Inquiry], what: Iterable[str]) -> list[tuple[BlockKind, str]]:
    """The blocklist entries that `block` asks for: each distinct email, domain, client IP."""
    kinds = set(what)
    pairs: list[tuple[BlockKind, str]] = []
    for inquiry in inquiries:
        if "email" in kinds:
            pairs.append((BlockKind.EMAIL, inquiry.email))
        if "domain" in kinds:
            pairs.append((BlockKind.DOMAIN, domain_of(inquiry.email)))
        if "ip" in kinds and inquiry.client_ip:
            pairs.append((BlockKind.IP, normalize(BlockKind.IP, inquiry.client_ip)))
    return pairs


class InquiryService:
    async def submit(
        self,
        state: State,
        body: InquirySubmit,
        *,
        client_ip: str | None,
        user_agent: str | None,
        idempotency_key: str | None,
    ) -> Outcome[None]:
        spam = spam_reason(body, blocked=state.screen.blocked(body.email, client_ip))
        row = new_row(
            state.ids.next_id(), body, client_ip=client_ip, user_agent=user_agent, spam=spam
        )
        # Every submit is answered the same and stored the same way, spam included: a
        # blocked sender cannot tell.
        answer = orjson.dumps(submitted_json(row["id"], row["created_at"]))

        async def work(conn: FastConn) -> tuple[int, bytes, None]:
            await repository.insert_row(conn, state.fastdb.dialect, row)
            return 201, answer, None

        # Hashed only with an Idempotency-Key (idempotency/service.py); a retry may carry a
        # new captcha solution.
        payload = (
            body.model_dump(mode="json", exclude={"altcha"})
            if idempotency_key is not None
            else None
        )
        outcome = await run_once(state.fastdb, "inquiries.submit", idempotency_key, payload, work)
        if outcome.replayed:  # nothing was stored now
            return outcome
        if spam is None:
            state.metrics.inquiries_submitted.inc()
            state.events.publish("inquiry.sent", inquiry_json(row), inquiryId=str(row["id"]))
        else:  # spam notifies nobody
            state.metrics.inquiry_blocked[spam.value].inc()
        return outcome

    async def get(
        self, session: AsyncSession, inquiry_id: int, *, include_deleted: bool = False
    ) -> Inquiry:
        found = await repository.get(session, inquiry_id, include_deleted=include_deleted)
        if found is None:
            raise NotFound("No such inquiry")
        return found

    async def page(
        self,
        state: State,
        query: ListQuery,
        *,
        statuses: list[InquiryStatus] | None,
        email: str | None,
        spam: bool | None = None,
    ) -> bytes:
        """The JSON of an InquiryPage."""
        rows, next_cursor, total = await repository.page(
            state.fastdb, query, statuses=statuses, email=email, spam=spam
        )
        return page_body([inquiry_json(r) for r in rows], query.limit, next_cursor, total)

    async def _locked(self, session: AsyncSession, inquiry_id: int, *, deleted: bool) -> Inquiry:
        found = await repository.get(session, inquiry_id, include_deleted=deleted, lock=True)
        if found is None:
            raise NotFound("No such inquiry")
        return found

    def _changed(
        self, state: State, session: AsyncSession, inquiry: Inquiry, actor: AuthPrincipal
    ) -> None:
        event = updated_json(inquiry, actor.sub)
        after_commit(
            session,
            lambda: state.events.publish("inquiry.updated", event, inquiryId=event["id"]),
        )

    async def update(
        self,
        session: AsyncSession,
        state: State,
        inquiry_id: int,
        body: InquiryUpdate,
        actor: AuthPrincipal,
    ) -> Inquiry:
        inquiry = await self._locked(session, inquiry_id, deleted=False)
        changed = False
        if body.status is not None:
            outcome = move(inquiry, body.status, spam=bool(body.spam))
            if outcome == INVALID:
                raise InvalidTransition(
                    f"An inquiry cannot go from {inquiry.status} to {body.status}"
                )
            changed = outcome == CHANGED
        if "note" in body.model_fields_set and body.note != inquiry.note:
            inquiry.note = body.note
            changed = True
        if changed:
            inquiry.updated_at = utcnow()
            await session.flush()
            self._changed(state, session, inquiry, actor)
        return inquiry

    async def bulk_status(
        self, session: AsyncSession, state: State, body: BulkStatus, actor: AuthPrincipal
    ) -> dict[str, Any]:
        """BulkStatusOut's JSON (`blocked` only with `block`)."""
        wanted = list(dict.fromkeys(body.ids))
        parsed = {raw: parse_id(raw) for raw in wanted}
        found = {
            i.id: i
            for i in await repository.get_many_live(
                session, [v for v in parsed.values() if v is not None]
            )
        }
        now = utcnow()
        updated: list[str] = []
        skipped: list[dict[str, str]] = []
        for raw, inquiry_id in parsed.items():
            inquiry = found.get(inquiry_id) if inquiry_id is not None else None
            if inquiry is None:
                skipped.append({"id": raw, "reason": "not-found"})
                continue
            outcome = move(inquiry, body.status, spam=bool(body.spam))
            if outcome == CHANGED:
                inquiry.updated_at = now
                updated.append(raw)
                self._changed(state, session, inquiry, actor)
            else:
                skipped.append({"id": raw, "reason": outcome})
        await session.flush()
        answer: dict[str, Any] = {"updated": updated, "skipped": skipped}
        if body.block:
            # Every live inquiry of `ids` that is spam now: those updated, and those skipped
            # as spam already (a flood's honeypot hits included).
            spam = [i for i in found.values() if i.spam_reason is not None]
            answer["blocked"] = await blocklist_service.add_unlisted(
                session, state, block_pairs(spam, body.block), actor, "bulk-status spam"
            )
        return answer

    async def delete(
        self, session: AsyncSession, state: State, inquiry_id: int, actor: AuthPrincipal
    ) -> None:
        inquiry = await self._locked(session, inquiry_id, deleted=False)
        inquiry.deleted_at = inquiry.updated_at = utcnow()
        await session.flush()
        self._changed(state, session, inquiry, actor)

    async def restore(
        self, session: AsyncSession, state: State, inquiry_id: int, actor: AuthPrincipal
    ) -> Inquiry:
        inquiry = await self._locked(session, inquiry_id, deleted=True)
        if inquiry.deleted_at is not None:
            inquiry.deleted_at = None
            inquiry.updated_at = utcnow()
            await session.flush()
            self._changed(state, session, inquiry, actor)
        return inquiry


inquiry = InquiryService()
