"""Subscriber rules: silent subscribe, token unsubscribe, admin CRUD."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.core.errors import EmailTaken, NotFound
from outreach.core.text import search_key
from outreach.db.base import after_commit, utcnow
from outreach.db.fast import FastConn, Row
from outreach.db.listing import ListQuery, page_body
from outreach.idempotency.service import Outcome, run_once
from outreach.state import State
from outreach.subscribers import repository
from outreach.subscribers.models import (
    ConsentMethod,
    Subscriber,
    SubscriberStatus,
    appended,
    consent_record,
    new_row,
    subscribed,
    unsubscribed,
)
from outreach.subscribers.schemas import (
    SubscribeIn,
    SubscriberCreate,
    SubscriberUpdate,
    subscriber_json,
)
from outreach.subscribers.tokens import (
    CONFIRM,
    is_valid,
    mac_matches,
    selector_of,
    token_secrets,
)
from outreach.templates import Language

ACCEPTED = orjson.dumps({"status": "ACCEPTED"})


class SubscriberService:
    def _publish(self, state: State, event: str, row: Any) -> None:
        state.metrics.subscriber_event[event.partition(".")[2]].inc()
        payload = subscriber_json(row)
        state.events.publish(event, payload, subscriberId=payload["id"])

    async def subscribe(
        self,
        state: State,
        body: SubscribeIn,
        *,
        client_ip: str | None,
        idempotency_key: str | None,
        language: Language = "vi",
        user_agent: str | None = None,
    ) -> Outcome[Row | None]:
        if state.screen.blocked(body.email, client_ip):
            # Answered like every subscribe, and nothing changes (API.md section 10).
            return Outcome(202, ACCEPTED, False, None)
        double = state.settings.subscribe_confirmation == "double"
        now = utcnow()
        method = ConsentMethod.DOUBLE if double else ConsentMethod.SINGLE
        row = new_row(
            state.ids.next_id(),
            body.email,
            body.name,
            body.source,
            now,
            confirm=double,
            language=language,
            consent=consent_record(
                now, method, ip=client_ip, user_agent=user_agent, source=body.source
            ),
        )

        async def work(conn: FastConn) -> tuple[int, bytes, Row | None]:
            # Double opt-in: the confirm mail's job is queued by this same statement.
            changed = await repository.subscribe(conn, state.fastdb.dialect, row, confirm=double)
            # The same answer whatever happened: nobody learns who is subscribed.
            return 202, ACCEPTED, changed

        # Hashed only with an Idempotency-Key (idempotency/service.py); a retry may carry a
        # new captcha solution.
        payload = (
            body.model_dump(mode="json", exclude={"altcha"})
            if idempotency_key is not None
            else None
        )
        outcome = await run_once(
            state.fastdb, "subscribers.subscribe", idempotency_key, payload, work
        )
        if outcome.value is not None and outcome.value["status"] == SubscriberStatus.ACTIVE:
            self._publish(state, "subscriber.subscribed", outcome.value)
        return outcome

    async def _holder(self, state: State, token: str) -> Row:
        """The live subscriber whose confirm `token` this is, while it is valid."""
        selector = selector_of(token)
        found = (
            await repository.find_by_confirm_selector(state.fastdb, selector) if selector else None
        )
        if (
            selector is None
            or found is None
            or not mac_matches(token_secrets(state.settings), selector, token, purpose=CONFIRM)
            or found["confirm_expires_at"] <= utcnow()
        ):
            raise NotFound("Unknown or expired confirmation link")
        return found

    async def confirm(self, state: State, token: str) -> str:
        """Double opt-in: PENDING to ACTIVE with the confirm token (also when it confirmed
        already), its address for the page; NotFound for an unknown, expired or used-up
        token."""
        found = await self._holder(state, token)
        if found["status"] == SubscriberStatus.PENDING.value:
            row = await repository.confirm(state.fastdb, found["id"], utcnow())
            if row is not None:
                self._publish(state, "subscriber.subscribed", row)
        return str(found["email"])

    async def confirm_page(self, state: State, token: str) -> str:
        """The address a confirm link is for (changes nothing: mail scanners follow links)."""
        return str((await self._holder(state, token))["email"])

    async def unsubscribe_page(self, state: State, token: str) -> str:
        """The address an unsubscribe link is for (changes nothing)."""
        return str((await self._unsubscribe_holder(state, token))["email"])

    async def _unsubscribe_holder(self, state: State, token: str) -> Row:
        selector = selector_of(token)
        found = await repository.find_by_selector(state.fastdb, selector) if selector else None
        if (
            selector is None
            or found is None
            or not is_valid(
                token_secrets(state.settings), selector, found["legacy_token_hash"], token
            )
        ):
            raise NotFound("Unknown or expired unsubscribe link")
        return found

    async def unsubscribe(self, state: State, token: str) -> str:
        """Deactivate the subscriber holding `token` (its address, for the page); NotFound
        for any other token."""
        found = await self._unsubscribe_holder(state, token)
        if found["status"] != SubscriberStatus.ACTIVE.value:
            return str(found["email"])
        row = await repository.unsubscribe(state.fastdb, found["id"], utcnow())
        if row is not None:
            self._publish(state, "subscriber.unsubscribed", row)
        return str(found["email"])

    async def get(
        self,
        session: AsyncSession,
        subscriber_id: int,
        *,
        include_deleted: bool = False,
        lock: bool = False,
    ) -> Subscriber:
        found = await repository.get(
            session, subscriber_id, include_deleted=include_deleted, lock=lock
        )
        if found is None:
            raise NotFound("No such subscriber")
        return found

    async def page(
        self, state: State, query: ListQuery, statuses: list[SubscriberStatus] | None
    ) -> bytes:
        """The JSON of a SubscriberPage."""
        rows, next_cursor, total = await repository.page(state.fastdb, query, statuses)
        return page_body([subscriber_json(r) for r in rows], query.limit, next_cursor, total)

    async def create(
        self, session: AsyncSession, state: State, body: SubscriberCreate
    ) -> Subscriber:
        if await repository.live_email_taken(session, body.email):
            raise EmailTaken("A subscriber with this email exists")
        now = utcnow()
        subscriber = Subscriber(
            **new_row(
                state.ids.next_id(),
                body.email,
                body.name,
                body.source,
                now,
                consent=consent_record(now, ConsentMethod.STAFF, source=body.source),
            )
        )
        session.add(subscriber)
        try:
            await session.flush()
        except IntegrityError:
            raise EmailTaken("A subscriber with this email exists") from None
        await state.outbox(session, state, "subscriber.subscribed", subscriber_json(subscriber))
        after_commit(session, lambda: self._publish(state, "subscriber.subscribed", subscriber))
        return subscriber

    async def update(
        self, session: AsyncSession, state: State, subscriber_id: int, body: SubscriberUpdate
    ) -> Subscriber:
        subscriber = await self.get(session, subscriber_id, lock=True)
        now = utcnow()
        changes: dict[str, Any] = {}
        event: str | None = None
        if "name" in body.model_fields_set and body.name != subscriber.name:
            changes["name"] = body.name
            changes["search_text"] = search_key(subscriber.email, body.name)
        if body.status is not None and body.status != subscriber.status:
            if body.status == SubscriberStatus.ACTIVE:
                changes.update(subscribed(now))  # a resubscribe: a new token
                staff = consent_record(now, ConsentMethod.STAFF, source=subscriber.source)
                changes["consent"] = appended(subscriber.consent, staff)
                event = "subscriber.subscribed"
            else:
                changes.update(unsubscribed(now))
                event = "subscriber.unsubscribed"
        if changes:
            changes["updated_at"] = now
            for name, value in changes.items():
                setattr(subscriber, name, value)
            await session.flush()
        if event is not None:
            name = event
            await state.outbox(session, state, name, subscriber_json(subscriber))
            after_commit(session, lambda: self._publish(state, name, subscriber))
        return subscriber

    async def delete(self, session: AsyncSession, subscriber_id: int) -> None:
        subscriber = await self.get(session, subscriber_id, lock=True)
        subscriber.deleted_at = subscriber.updated_at = utcnow()
        await session.flush()

    async def restore(self, session: AsyncSession, subscriber_id: int) -> Subscriber:
        subscriber = await self.get(session, subscriber_id, include_deleted=True, lock=True)
        if subscriber.deleted_at is None:
            return subscriber
        if await repository.live_email_taken(session, subscriber.email, other_than=subscriber.id):
            raise EmailTaken("A live subscriber now has this email")
        subscriber.deleted_at = None
        subscriber.updated_at = utcnow()
        try:
            await session.flush()
        except IntegrityError:
            raise EmailTaken("A live subscriber now has this email") from None
        return subscriber


subscriber = SubscriberService()
