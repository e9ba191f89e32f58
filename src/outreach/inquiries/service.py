"""Inquiry rules: submit (with the honeypot), transitions, bulk status, soft delete."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import InvalidTransition, NotFound
from outreach.core.schemas import parse_id
from outreach.core.text import search_key
from outreach.db.base import after_commit, utcnow
from outreach.db.fast import FastConn
from outreach.db.listing import ListQuery, page_body
from outreach.idempotency.service import Outcome, run_once
from outreach.inquiries import repository
from outreach.inquiries.jobs import wants_sent_job
from outreach.inquiries.models import TRANSITIONS, Inquiry, InquiryStatus
from outreach.inquiries.schemas import (
    BulkStatus,
    BulkStatusOut,
    InquirySubmit,
    InquiryUpdate,
    Skipped,
    inquiry_json,
    submitted_json,
    updated_json,
)
from outreach.jobs import payload_bytes
from outreach.state import State
from outreach.templates import Language


def new_row(
    inquiry_id: int, body: InquirySubmit, *, client_ip: str | None, user_agent: str | None
) -> dict[str, Any]:
    """Every column of a submitted inquiry; a filled honeypot is stored CANCELLED."""
    now = utcnow()
    honeypot = bool(body.website and body.website.strip())
    return {
        "id": inquiry_id,
        "name": body.name,
        "email": body.email,
        "phone": body.phone,
        "subject": body.subject,
        "message": body.message,
        "source": body.source,
        "status": InquiryStatus.CANCELLED if honeypot else InquiryStatus.SENT,
        "note": None,
        "client_ip": client_ip,
        "user_agent": user_agent,
        "search_text": search_key(body.name, body.email, body.subject, body.message),
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
    }


class InquiryService:
    async def submit(
        self,
        state: State,
        body: InquirySubmit,
        *,
        client_ip: str | None,
        user_agent: str | None,
        idempotency_key: str | None,
        language: Language = "vi",
    ) -> Outcome[None]:
        row = new_row(state.ids.next_id(), body, client_ip=client_ip, user_agent=user_agent)
        # Every submit is answered the same, honeypot included.
        answer = orjson.dumps(submitted_json(row["id"], row["created_at"]))
        # A SENT inquiry's mails and webhooks are a job queued by the INSERT's own statement
        # (same commit); a honeypot queues nothing, nor does a service that mails nobody
        # while no webhook listens (repository.INSERT_GROUPED).
        job = None
        if row["status"] == InquiryStatus.SENT and wants_sent_job(state.settings):
            job = payload_bytes({"inquiryId": str(row["id"]), "lang": language})

        async def work(conn: FastConn) -> tuple[int, bytes, None]:
            await repository.insert_row(conn, state.fastdb.dialect, row, job_payload=job)
            return 201, answer, None

        # Hashed only with an Idempotency-Key (idempotency/service.py).
        payload = body.model_dump(mode="json") if idempotency_key is not None else None
        outcome = await run_once(state.fastdb, "inquiries.submit", idempotency_key, payload, work)
        # A replay stored nothing now; a honeypot notifies nobody.
        if not outcome.replayed and row["status"] == InquiryStatus.SENT:
            state.metrics.inquiries_submitted.inc()
            state.events.publish("inquiry.sent", inquiry_json(row), inquiryId=str(row["id"]))
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
    ) -> bytes:
        """The JSON of an InquiryPage."""
        rows, next_cursor, total = await repository.page(
            state.fastdb, query, statuses=statuses, email=email
        )
        return page_body([inquiry_json(r) for r in rows], query.limit, next_cursor, total)

    async def _locked(self, session: AsyncSession, inquiry_id: int, *, deleted: bool) -> Inquiry:
        found = await repository.get(session, inquiry_id, include_deleted=deleted, lock=True)
        if found is None:
            raise NotFound("No such inquiry")
        return found

    async def _changed(
        self, state: State, session: AsyncSession, inquiry: Inquiry, actor: AuthPrincipal
    ) -> None:
        event = updated_json(inquiry, actor.sub)
        await state.outbox(session, state, "inquiry.updated", event)  # in this transaction
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
        if body.status is not None and body.status != inquiry.status:
            if body.status not in TRANSITIONS[InquiryStatus(inquiry.status)]:
                raise InvalidTransition(
                    f"An inquiry cannot go from {inquiry.status} to {body.status}"
                )
            inquiry.status = body.status
            changed = True
        if "note" in body.model_fields_set and body.note != inquiry.note:
            inquiry.note = body.note
            changed = True
        if changed:
            inquiry.updated_at = utcnow()
            await session.flush()
            await self._changed(state, session, inquiry, actor)
        return inquiry

    async def bulk_status(
        self, session: AsyncSession, state: State, body: BulkStatus, actor: AuthPrincipal
    ) -> BulkStatusOut:
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
        skipped: list[Skipped] = []
        for raw, inquiry_id in parsed.items():
            inquiry = found.get(inquiry_id) if inquiry_id is not None else None
            if inquiry is None:
                skipped.append(Skipped(id=raw, reason="not-found"))
            elif inquiry.status == body.status:
                skipped.append(Skipped(id=raw, reason="unchanged"))
            elif body.status not in TRANSITIONS[InquiryStatus(inquiry.status)]:
                skipped.append(Skipped(id=raw, reason="invalid-transition"))
            else:
                inquiry.status = body.status
                inquiry.updated_at = now
                updated.append(raw)
                await self._changed(state, session, inquiry, actor)
        await session.flush()
        return BulkStatusOut(updated=updated, skipped=skipped)

    async def delete(
        self, session: AsyncSession, state: State, inquiry_id: int, actor: AuthPrincipal
    ) -> None:
        inquiry = await self._locked(session, inquiry_id, deleted=False)
        inquiry.deleted_at = inquiry.updated_at = utcnow()
        await session.flush()
        await self._changed(state, session, inquiry, actor)

    async def restore(
        self, session: AsyncSession, state: State, inquiry_id: int, actor: AuthPrincipal
    ) -> Inquiry:
        inquiry = await self._locked(session, inquiry_id, deleted=True)
        if inquiry.deleted_at is not None:
            inquiry.deleted_at = None
            inquiry.updated_at = utcnow()
            await session.flush()
            await self._changed(state, session, inquiry, actor)
        return inquiry


inquiry = InquiryService()
