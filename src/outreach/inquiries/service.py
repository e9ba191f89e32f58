"""Inquiry rules: submit (with the honeypot), transitions, bulk status, soft delete."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.auth.principal import AuthPrincipal
from outreach.blocklist.models import BlockKind
from outreach.blocklist.service import blocklist as blocklist_service
from outreach.blocklist.values import domain_of, normalize
from outreach.core.errors import InvalidTransition, NotFound
from outreach.core.schemas import decode_cursor, encode_cursor, format_time, parse_id
from outreach.core.text import search_key
from outreach.db.base import after_commit, utcnow
from outreach.db.fast import FastConn
from outreach.db.listing import ListQuery, page_body
from outreach.idempotency.service import Outcome, run_once
from outreach.inquiries import repository
from outreach.inquiries.jobs import wants_sent_job
from outreach.inquiries.models import (
    TRACKED,
    TRANSITIONS,
    Action,
    Inquiry,
    InquiryComment,
    InquiryHistory,
    InquiryStatus,
    Priority,
    SpamReason,
)
from outreach.inquiries.schemas import (
    BulkStatus,
    CommentCreate,
    InquirySubmit,
    InquiryUpdate,
    comment_json,
    history_json,
    inquiry_json,
    submitted_json,
    updated_json,
)
from outreach.jobs import payload_bytes
from outreach.state import State
from outreach.templates import Language


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
        "assignee_id": None,
        "priority": Priority.NORMAL.value,
        "first_responded_at": None,
        "resolved_at": None,
        "erased_at": None,
        "client_ip": client_ip,
        "user_agent": user_agent,
        "search_text": search_key(body.name, body.email, body.subject, body.message),
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
    }


CHANGED, UNCHANGED, INVALID = "changed", "unchanged", "invalid-transition"


def move(inquiry: Inquiry, status: InquiryStatus, *, spam: bool, now: datetime) -> str:
    """The one rule of a status change, for PATCH and bulk-status alike (API.md sections 3,
    10 and 11): CHANGED (applied), UNCHANGED (a no-op) or INVALID (not an allowed
    transition).

    `spam` (with CANCELLED) marks it spam by staff: on an inquiry already CANCELLED with no
    reason that is a change; on one with a reason, a no-op. Leaving CANCELLED clears the
    reason. The first time the status leaves SENT is the first response (set once);
    `resolvedAt` is the time it last became RESOLVED, cleared when it is reopened.
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
    if current is InquiryStatus.SENT and inquiry.first_responded_at is None:
        inquiry.first_responded_at = now
    inquiry.resolved_at = now if status is InquiryStatus.RESOLVED else None
    return CHANGED


# The history and inquiry.updated name the tracked fields as the API does.
WIRE_NAMES = {
    "status": "status",
    "note": "note",
    "assignee_id": "assigneeId",
    "priority": "priority",
    "spam_reason": "spamReason",
}


def snapshot(inquiry: Inquiry) -> dict[str, Any]:
    return {name: _plain(getattr(inquiry, name)) for name in TRACKED}


def changes_since(before: dict[str, Any], inquiry: Inquiry) -> dict[str, dict[str, Any]]:
    """Each tracked field that changed: {"status": {"from": "SENT", "to": "RESOLVED"}}."""
    after = snapshot(inquiry)
    return {
        WIRE_NAMES[name]: {"from": before[name], "to": after[name]}
        for name in TRACKED
        if before[name] != after[name]
    }


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, str) else value


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
        language: Language = "vi",
    ) -> Outcome[None]:
        spam = spam_reason(body, blocked=state.screen.blocked(body.email, client_ip))
        row = new_row(
            state.ids.next_id(), body, client_ip=client_ip, user_agent=user_agent, spam=spam
        )
        # Every submit is answered the same and stored the same way, spam included: a
        # blocked sender cannot tell.
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
        assignee: str | None = None,
        priorities: list[Priority] | None = None,
    ) -> bytes:
        """The JSON of an InquiryPage."""
        rows, next_cursor, total = await repository.page(
            state.fastdb,
            query,
            statuses=statuses,
            email=email,
            spam=spam,
            assignee=assignee,
            priorities=priorities,
        )
        return page_body([inquiry_json(r) for r in rows], query.limit, next_cursor, total)

    async def _locked(self, session: AsyncSession, inquiry_id: int, *, deleted: bool) -> Inquiry:
        found = await repository.get(session, inquiry_id, include_deleted=deleted, lock=True)
        if found is None:
            raise NotFound("No such inquiry")
        return found

    async def record(
        self,
        session: AsyncSession,
        state: State,
        inquiry: Inquiry,
        actor: str | None,
        action: Action,
        changes: dict[str, dict[str, Any]],
        now: datetime,
    ) -> None:
        """A change of `inquiry`: its history entry in this transaction, and after commit its
        events (`inquiry.updated`; `inquiry.assigned` to the new assignee's own room)."""
        session.add(
            InquiryHistory(
                id=state.ids.next_id(),
                inquiry_id=inquiry.id,
                at=now,
                actor_id=actor,
                action=action.value,
                changes=changes,
            )
        )
        updated = updated_json(inquiry, actor)
        assignee = changes.get("assigneeId", {}).get("to")
        assigned = inquiry_json(inquiry) if assignee else None
        # Webhook messages may not be lost: queued in this transaction (state.outbox).
        await state.outbox(session, state, "inquiry.updated", updated)
        if assigned is not None:
            await state.outbox(session, state, "inquiry.assigned", assigned)

        def announce() -> None:
            state.events.publish("inquiry.updated", updated, inquiryId=updated["id"])
            if assigned is not None:
                state.events.publish(
                    "inquiry.assigned",
                    assigned,
                    rooms=[f"user:{assignee}"],
                    inquiryId=updated["id"],
                )

        after_commit(session, announce)

    async def update(
        self,
        session: AsyncSession,
        state: State,
        inquiry_id: int,
        body: InquiryUpdate,
        actor: AuthPrincipal,
    ) -> Inquiry:
        inquiry = await self._locked(session, inquiry_id, deleted=False)
        before = snapshot(inquiry)
        now = utcnow()
        given = body.model_fields_set
        if body.status is not None:
            if move(inquiry, body.status, spam=bool(body.spam), now=now) == INVALID:
                raise InvalidTransition(
                    f"An inquiry cannot go from {inquiry.status} to {body.status}"
                )
        if "note" in given:
            inquiry.note = body.note
        if "assignee_id" in given:
            inquiry.assignee_id = body.assignee_id
        if body.priority is not None:
            inquiry.priority = body.priority.value
        changes = changes_since(before, inquiry)
        if changes:  # setting what it already has is a no-op: no entry, no event
            inquiry.updated_at = now
            await self.record(session, state, inquiry, actor.sub, Action.UPDATED, changes, now)
            await session.flush()
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
            before = snapshot(inquiry)
            outcome = move(inquiry, body.status, spam=bool(body.spam), now=now)
            if outcome == CHANGED:
                inquiry.updated_at = now
                updated.append(raw)
                changes = changes_since(before, inquiry)
                await self.record(session, state, inquiry, actor.sub, Action.UPDATED, changes, now)
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
        now = utcnow()
        inquiry.deleted_at = inquiry.updated_at = now
        await self.record(session, state, inquiry, actor.sub, Action.DELETED, {}, now)
        await session.flush()

    async def restore(
        self, session: AsyncSession, state: State, inquiry_id: int, actor: AuthPrincipal
    ) -> Inquiry:
        inquiry = await self._locked(session, inquiry_id, deleted=True)
        if inquiry.deleted_at is not None:
            now = utcnow()
            inquiry.deleted_at = None
            inquiry.updated_at = now
            await self.record(session, state, inquiry, actor.sub, Action.RESTORED, {}, now)
            await session.flush()
        return inquiry

    async def comment(
        self,
        session: AsyncSession,
        state: State,
        inquiry_id: int,
        body: CommentCreate,
        actor: AuthPrincipal,
    ) -> InquiryComment:
        """An internal note; recorded in the history, announced as `inquiry.commented`."""
        inquiry = await self._locked(session, inquiry_id, deleted=False)
        now = utcnow()
        comment = InquiryComment(
            id=state.ids.next_id(),
            inquiry_id=inquiry.id,
            body=body.body,
            author_id=actor.sub,
            created_at=now,
        )
        session.add(comment)
        session.add(
            InquiryHistory(
                id=state.ids.next_id(),
                inquiry_id=inquiry.id,
                at=now,
                actor_id=actor.sub,
                action=Action.COMMENTED.value,
                changes={},
            )
        )
        await session.flush()
        payload = comment_json(comment)
        await state.outbox(session, state, "inquiry.commented", payload)
        after_commit(
            session,
            lambda: state.events.publish(
                "inquiry.commented", payload, inquiryId=payload["inquiryId"]
            ),
        )
        return comment

    async def comments(
        self, session: AsyncSession, state: State, inquiry_id: int, query: ListQuery
    ) -> bytes:
        await self.get(session, inquiry_id, include_deleted=query.include_deleted)
        rows, next_cursor, total = await repository.comments(state.fastdb, inquiry_id, query)
        return page_body([comment_json(r) for r in rows], query.limit, next_cursor, total)

    async def history(
        self, session: AsyncSession, state: State, inquiry_id: int, query: ListQuery
    ) -> bytes:
        """The stored entries, with the `created` one derived from the inquiry itself."""
        inquiry = await self.get(session, inquiry_id, include_deleted=query.include_deleted)
        rows, total = await repository.history(state.fastdb, inquiry_id, query)
        entries = [history_json(r) for r in rows]
        after = decode_cursor(query.cursor, query.order) if query.cursor else None
        ascending = query.order == "asc"
        if after is None or (after > inquiry.id if not ascending else after < inquiry.id):
            every = await repository.all_changes(state.fastdb, inquiry_id)
            entries.append(created_entry(inquiry, every))
        entries.sort(key=lambda e: int(e["id"]), reverse=not ascending)
        next_cursor = None
        if len(entries) > query.limit:
            entries = entries[: query.limit]
            next_cursor = encode_cursor(int(entries[-1]["id"]), query.order)
        return page_body(entries, query.limit, next_cursor, total + 1)


def created_entry(inquiry: Inquiry, later: list[dict[str, Any]]) -> dict[str, Any]:
    """The `created` entry: its id and time are the inquiry's, its actor the public form
    (null), and its changes the status and spam reason it was created with: what the first
    later change of each started from, else what it still is. `later`: every stored
    entry's changes, oldest first."""
    initial: dict[str, Any] = {"status": inquiry.status, "spamReason": inquiry.spam_reason}
    for changes in reversed(later):
        for name in initial:
            if name in changes:
                initial[name] = changes[name]["from"]
    changes = {name: {"from": None, "to": value} for name, value in initial.items() if value}
    return {
        "id": str(inquiry.id),
        "at": format_time(inquiry.created_at),
        "actorId": None,
        "action": Action.CREATED.value,
        "changes": changes,
    }


inquiry = InquiryService()
