"""Inquiry rules: submit (with the honeypot), transitions, bulk status, soft delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import InvalidTransition, NotFound
from outreach.db.fast import FastConn, FastDB
from outreach.idempotency.service import Outcome, run_once
from outreach.db.listing import ListQuery, page_body
from outreach.state import Runtime
from outreach.core.schemas import format_time, parse_id
from outreach.core.text import search_key
from outreach.db.base import after_commit, utcnow
from outreach.inquiries import repository
from outreach.inquiries.models import TRANSITIONS, Inquiry, InquiryStatus
from outreach.inquiries.schemas import (
    BulkStatus,
    BulkStatusOut,
    InquiryEvent,
    InquirySubmit,
    InquiryUpdate,
    Skipped,
)


def to_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """InquiryOut's JSON of a row, without pydantic: once per submit (the inquiry.sent event)
    and per row of a list page. The tests compare both with GET /inquiries/{id}."""
    created = format_time(row["created_at"])
    updated = row["updated_at"]
    deleted = row["deleted_at"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "email": row["email"],
        "phone": row["phone"],
        "subject": row["subject"],
        "message": row["message"],
        "source": row["source"],
        "status": str(row["status"]),
        "note": row["note"],
        "clientIp": row["client_ip"],
        "userAgent": row["user_agent"],
        "createdAt": created,
        "updatedAt": created if updated == row["created_at"] else format_time(updated),
        "deletedAt": format_time(deleted) if deleted is not None else None,
    }


class InquiryService:
    async def submit(
        self,
        rt: Runtime,
        body: InquirySubmit,
        *,
        client_ip: str | None,
        user_agent: str | None,
        idempotency_key: str | None,
    ) -> Outcome:
        honeypot = bool(body.website and body.website.strip())
        captured: dict[str, Any] = {}

        async def work(conn: FastConn) -> tuple[int, bytes]:
            now = utcnow()
            row = {
                "id": rt.ids.next_id(),
                "name": body.name,
                "email": body.email,
                "phone": body.phone,
                "subject": body.subject,
                "message": body.message,
                "source": body.source,
                # A filled honeypot is stored, cancelled, and answered exactly like the rest.
                "status": InquiryStatus.CANCELLED if honeypot else InquiryStatus.SENT,
                "note": None,
                "client_ip": client_ip,
                "user_agent": user_agent,
                "search_text": search_key(body.name, body.email, body.subject, body.message),
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
            }
            await repository.insert_row(conn, row)
            captured["row"] = row
            answer = {"id": str(row["id"]), "status": "SENT", "createdAt": format_time(now)}
            return 201, orjson.dumps(answer)

        # Hashed only with an Idempotency-Key (core/idempotency.py).
        payload = body.model_dump(mode="json") if idempotency_key is not None else None
        outcome = await run_once(rt.fastdb, "inquiries.submit", idempotency_key, payload, work)
        row = captured.get("row")
        if row is not None and not honeypot:
            rt.metrics.inquiries_submitted.inc()
            rt.events.publish("inquiry.sent", to_out(row), inquiryId=str(row["id"]))
        return outcome

    async def get(
        self, session: AsyncSession, raw_id: str, *, include_deleted: bool = False
    ) -> Inquiry:
        inquiry_id = parse_id(raw_id)
        found = None
        if inquiry_id is not None:
            found = await repository.get(session, inquiry_id, include_deleted=include_deleted)
        if found is None:
            raise NotFound("No such inquiry")
        return found

    async def page(
        self,
        db: FastDB,
        query: ListQuery,
        *,
        statuses: list[InquiryStatus] | None,
        email: str | None,
    ) -> bytes:
        """The JSON of an InquiryPage."""
        rows, next_cursor, total = await repository.page(db, query, statuses=statuses, email=email)
        return page_body([to_out(r) for r in rows], query.limit, next_cursor, total)

    async def _locked(self, session: AsyncSession, raw_id: str, *, deleted: bool) -> Inquiry:
        inquiry_id = parse_id(raw_id)
        found = None
        if inquiry_id is not None:
            found = await repository.get(session, inquiry_id, include_deleted=deleted, lock=True)
        if found is None:
            raise NotFound("No such inquiry")
        return found

    def _changed(
        self, rt: Runtime, session: AsyncSession, inquiry: Inquiry, actor: AuthPrincipal
    ) -> None:
        event = InquiryEvent(
            id=inquiry.id,
            status=InquiryStatus(inquiry.status),
            note=inquiry.note,
            updated_at=inquiry.updated_at,
            deleted_at=inquiry.deleted_at,
            updated_by=actor.sub,
        ).model_dump(mode="json", by_alias=True)
        after_commit(
            session,
            lambda: rt.events.publish("inquiry.updated", event, inquiryId=str(inquiry.id)),
        )

    async def update(
        self,
        session: AsyncSession,
        rt: Runtime,
        raw_id: str,
        body: InquiryUpdate,
        actor: AuthPrincipal,
    ) -> Inquiry:
        inquiry = await self._locked(session, raw_id, deleted=False)
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
            self._changed(rt, session, inquiry, actor)
        return inquiry

    async def bulk_status(
        self, session: AsyncSession, rt: Runtime, body: BulkStatus, actor: AuthPrincipal
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
                self._changed(rt, session, inquiry, actor)
        await session.flush()
        return BulkStatusOut(updated=updated, skipped=skipped)

    async def delete(
        self, session: AsyncSession, rt: Runtime, raw_id: str, actor: AuthPrincipal
    ) -> None:
        inquiry = await self._locked(session, raw_id, deleted=False)
        inquiry.deleted_at = inquiry.updated_at = utcnow()
        await session.flush()
        self._changed(rt, session, inquiry, actor)

    async def restore(
        self, session: AsyncSession, rt: Runtime, raw_id: str, actor: AuthPrincipal
    ) -> Inquiry:
        inquiry = await self._locked(session, raw_id, deleted=True)
        if inquiry.deleted_at is not None:
            inquiry.deleted_at = None
            inquiry.updated_at = utcnow()
            await session.flush()
            self._changed(rt, session, inquiry, actor)
        return inquiry


inquiry = InquiryService()
