"""Webhook rules: endpoints (the secret shown once, rotation), messages queued for them,
and the delivery attempt with its retry schedule and the endpoint's auto-disable."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.core.errors import NotFound, ValidationFailed
from outreach.core.schemas import format_time
from outreach.db.base import utcnow
from outreach.db.listing import ListQuery, page_body
from outreach.jobs import LEAF, WEBHOOK_SCHEDULE, Job, Registry, RetryLater, enqueue
from outreach.outbound.guard import Refused, Sent
from outreach.state import State
from outreach.subscribers.tokens import token_secrets
from outreach.webhooks import repository
from outreach.webhooks.models import DeliveryStatus, MessageState, WebhookEndpoint
from outreach.webhooks.schemas import (
    TEST_EVENT,
    WebhookCreate,
    WebhookUpdate,
    delivery_json,
    message_key,
    webhook_json,
)
from outreach.webhooks.secrets import (
    SecretUnavailable,
    new_secret,
    seal,
    signature_header,
    unseal,
)

log = structlog.get_logger("outreach.webhooks")

# API.md section 13: the waits after attempts 1..7 (the queue's schedule for our job kind);
# the 8th failure gives the message up.
RETRY_DELAYS_SECONDS = WEBHOOK_SCHEDULE.delays
MAX_ATTEMPTS = len(RETRY_DELAYS_SECONDS) + 1
DELIVER = "webhook.deliver"  # job kind: one attempt at one message
# An endpoint whose every attempt failed for this long is deactivated.
DISABLE_AFTER = timedelta(days=5)
# After a rotation, the old secret signs beside the new one for this long.
ROTATION_OVERLAP = timedelta(hours=24)
USER_AGENT = "outreach-webhooks/1"


def message_body(event: str, data: Any, at: datetime) -> str:
    """The Standard Webhooks payload: its text is what is signed and sent, on every try."""
    return orjson.dumps({"type": event, "timestamp": format_time(at), "data": data}).decode()


class WebhookService:
    async def _checked_url(self, state: State, url: str) -> None:
        try:
            await state.outbound.check(url)
        except Refused as exc:
            raise ValidationFailed(f"url: {exc}", errors=[("url", str(exc))]) from None

    async def get(
        self, session: AsyncSession, endpoint_id: int, *, lock: bool = False
    ) -> WebhookEndpoint:
        found = await repository.get(session, endpoint_id, lock=lock)
        if found is None:
            raise NotFound("No such webhook endpoint")
        return found

    async def page(self, session: AsyncSession, query: ListQuery) -> bytes:
        rows, next_cursor, total = await repository.page(session, query)
        return page_body([webhook_json(r) for r in rows], query.limit, next_cursor, total)

    async def deliveries(self, session: AsyncSession, endpoint_id: int, query: ListQuery) -> bytes:
        await self.get(session, endpoint_id)
        rows, next_cursor, total = await repository.deliveries_page(session, endpoint_id, query)
        return page_body([delivery_json(r) for r in rows], query.limit, next_cursor, total)

    async def create(
        self, session: AsyncSession, state: State, body: WebhookCreate
    ) -> tuple[WebhookEndpoint, str]:
        """The new endpoint and its secret (the one time it is shown)."""
        await self._checked_url(state, body.url)
        now = utcnow()
        endpoint_id = state.ids.next_id()
        secret = new_secret()
        endpoint = WebhookEndpoint(
            id=endpoint_id,
            url=body.url,
            events=list(body.events),
            description=body.description,
            active=True,
            disabled_reason=None,
            secret=seal(token_secrets(state.settings), endpoint_id, secret),
            previous_secret=None,
            previous_secret_until=None,
            failing_since=None,
            created_at=now,
            updated_at=now,
            deleted_at=None,
        )
        session.add(endpoint)
        await session.flush()
        log.info("Webhook endpoint created", endpointId=str(endpoint_id), events=body.events)
        return endpoint, secret

    async def update(
        self, session: AsyncSession, state: State, endpoint_id: int, body: WebhookUpdate
    ) -> WebhookEndpoint:
        endpoint = await self.get(session, endpoint_id, lock=True)
        changes: dict[str, Any] = {}
        if body.url is not None and body.url != endpoint.url:
            await self._checked_url(state, body.url)
            changes["url"] = body.url
        if body.events is not None and body.events != endpoint.events:
            changes["events"] = list(body.events)
        if "description" in body.model_fields_set and body.description != endpoint.description:
            changes["description"] = body.description
        if body.active is not None and body.active != endpoint.active:
            changes["active"] = body.active
            if body.active:  # turned back on: a fresh start for the 5-day rule
                changes.update(disabled_reason=None, failing_since=None)
            else:
                changes["disabled_reason"] = None
        if changes:
            changes["updated_at"] = utcnow()
            for name, value in changes.items():
                setattr(endpoint, name, value)
            await session.flush()
        return endpoint

    async def delete(self, session: AsyncSession, endpoint_id: int) -> None:
        endpoint = await self.get(session, endpoint_id, lock=True)
        now = utcnow()
        endpoint.deleted_at = endpoint.updated_at = now
        await session.flush()
        dropped = await repository.drop_queued(
            session, endpoint_id, now, "dropped: endpoint deleted"
        )
        log.info("Webhook endpoint deleted", endpointId=str(endpoint_id), dropped=len(dropped))

    async def rotate(
        self, session: AsyncSession, state: State, endpoint_id: int
    ) -> tuple[WebhookEndpoint, str]:
        """A new secret; the current one keeps signing beside it for ROTATION_OVERLAP (a
        secret older than that is gone: only the latest previous secret is kept)."""
        endpoint = await self.get(session, endpoint_id, lock=True)
        now = utcnow()
        secret = new_secret()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_until = now + ROTATION_OVERLAP
        endpoint.secret = seal(token_secrets(state.settings), endpoint_id, secret)
        endpoint.updated_at = now
        await session.flush()
        log.info("Webhook secret rotated", endpointId=str(endpoint_id))
        return endpoint, secret

    async def queue(
        self,
        session: AsyncSession,
        state: State,
        endpoint_id: int,
        event: str,
        data: Any,
        *,
        source: str | None = None,
    ) -> int | None:
        """A message for one endpoint, in the caller's transaction; its id. With `source`
        (the key of the fan-out queuing it), None when that endpoint has a message of that
        source already: a fan-out run again queues nothing new."""
        now = utcnow()
        message_id = state.ids.next_id()
        if not await repository.add_message(
            session,
            message_id,
            state.ids.next_id(),
            endpoint_id,
            event,
            message_body(event, data, now),
            now,
            source,
        ):
            return None
        # The job names the message only: its body (personal data) stays in our table.
        await enqueue(session, DELIVER, {"messageId": str(message_id)}, priority=LEAF)
        return message_id

    async def queue_event(
        self,
        session: AsyncSession,
        state: State,
        event: str,
        payload: Mapping[str, Any],
        *,
        source: str | None = None,
    ) -> None:
        """A message of `event` for every active endpoint subscribed to it, in the change's
        own transaction (State.outbox). The endpoints are read once per transaction (a bulk
        change sends many events). `source` names a fan-out done after the change's commit
        (a job, which may run twice): an endpoint gets one message per source."""
        cache: dict[str, list[tuple[int, list[str]]]] = session.info.setdefault("webhooks", {})
        if "endpoints" not in cache:
            cache["endpoints"] = await repository.active_endpoints(session)
        for endpoint_id, events in cache["endpoints"]:
            if event in events:
                await self.queue(session, state, endpoint_id, event, payload, source=source)

    async def test(self, session: AsyncSession, state: State, endpoint_id: int) -> int:
        """Queue a `webhook.test` message to the endpoint (active or not: it is asked for)."""
        endpoint = await self.get(session, endpoint_id)
        message_id = await self.queue(
            session,
            state,
            endpoint.id,
            TEST_EVENT,
            {"endpointId": str(endpoint.id), "url": endpoint.url},
        )
        assert message_id is not None  # no source: never a repeat
        return message_id

    def _signing_secrets(self, state: State, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
        keys = token_secrets(state.settings)
        signing = [unseal(keys, endpoint.id, endpoint.secret)]
        until = endpoint.previous_secret_until
        if endpoint.previous_secret is not None and until is not None and now < until:
            signing.append(unseal(keys, endpoint.id, endpoint.previous_secret))
        return signing

    async def deliver(self, state: State, message_id: int) -> bool:
        """One attempt at a queued message. True when the message is settled (delivered,
        given up, dropped, or unknown), False when it is to be tried again later (the retry
        schedule's next wait: RETRY_DELAYS_SECONDS). No transaction is held across the call."""
        async with state.sessionmaker() as session:
            found = await repository.message_to_deliver(session, message_id)
        if found is None or found[0].state != MessageState.QUEUED:
            return True  # settled already (an at-least-once repeat), or its endpoint deleted
        message, endpoint = found
        now = utcnow()
        if endpoint.deleted_at is not None or (not endpoint.active and message.event != TEST_EVENT):
            async with state.sessionmaker() as session, session.begin():
                await repository.drop_queued(
                    session, endpoint.id, now, "dropped: endpoint inactive", only=message.id
                )
            state.metrics.webhook_delivery["dropped"].inc()
            return True
        attempt = message.attempts + 1
        key = message_key(message.id)
        assert message.body is not None  # a queued message keeps its body
        try:
            signing = self._signing_secrets(state, endpoint, now)
        except SecretUnavailable:
            log.error("Webhook secret cannot be opened", endpointId=str(endpoint.id))
            sent = Sent(None, "the signing secret cannot be opened (TOKEN_SECRET changed?)", 0)
        else:
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "webhook-id": key,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature_header(signing, key, now, message.body),
            }
            sent = await state.outbound.post(endpoint.url, message.body.encode(), headers)
        ok = sent.error is None
        settled = ok or attempt >= MAX_ATTEMPTS
        state_after = (
            MessageState.SUCCEEDED
            if ok
            else MessageState.FAILED
            if settled
            else MessageState.QUEUED
        )
        disabled = False
        async with state.sessionmaker() as session, session.begin():
            # Rows in one order everywhere (endpoint, message, attempt), as delete takes
            # them: two transactions never wait on each other in a circle.
            if ok:
                await repository.mark_succeeded(session, endpoint.id)
            else:
                disabled = await repository.mark_failed(
                    session,
                    endpoint.id,
                    now,
                    now - DISABLE_AFTER,
                    f"Every delivery failed for {DISABLE_AFTER.days} days (last: {sent.error})"[
                        :200
                    ],
                )
            await repository.settle_message(
                session, message.id, attempts=attempt, state=state_after
            )
            await repository.record_attempt(
                session,
                {
                    "id": state.ids.next_id(),
                    "endpoint_id": endpoint.id,
                    "message_id": message.id,
                    "event": message.event,
                    "attempt": attempt,
                    "status": (DeliveryStatus.SUCCEEDED if ok else DeliveryStatus.FAILED).value,
                    "response_status": sent.status,
                    "error": sent.error[:500] if sent.error else None,
                    "duration_ms": sent.duration_ms,
                    "at": now,
                },
            )
        state.metrics.webhook_delivery["succeeded" if ok else "failed"].inc()
        log.info(
            "Webhook delivery",
            endpointId=str(endpoint.id),
            messageId=key,
            webhookEvent=message.event,
            attempt=attempt,
            result="succeeded" if ok else "failed",
            responseStatus=sent.status,
            error=sent.error,
            durationMs=sent.duration_ms,
            settled=settled,
        )
        if disabled:
            log.warning(
                "Webhook endpoint disabled",
                endpointId=str(endpoint.id),
                reason="5 days of failures",
            )
        return settled


webhook = WebhookService()


def register_jobs(registry: Registry, state: State) -> None:
    """The webhook job kind, on this process's worker (main.DOMAIN_JOBS). Events reach it
    through State.outbox (the submit's through inquiries/jobs.py's fan-out)."""

    async def deliver(job: Job) -> None:
        if not await webhook.deliver(state, int(job.payload["messageId"])):
            raise RetryLater("delivery attempt failed")  # the log row says why

    registry.add(DELIVER, deliver, WEBHOOK_SCHEDULE)
