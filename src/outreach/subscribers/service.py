"""Subscriber rules: silent subscribe, token unsubscribe, admin CRUD, CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import EmailTaken, NotFound
from outreach.db.fast import FastConn, FastDB
from outreach.idempotency.service import Outcome, run_once
from outreach.db.listing import ListQuery, page_body
from outreach.state import Runtime
from outreach.core.schemas import format_time, parse_id
from outreach.core.text import search_key
from outreach.db.base import after_commit, utcnow
from outreach.subscribers import repository
from outreach.subscribers.models import Subscriber, SubscriberStatus
from outreach.subscribers.schemas import (
    SubscribeIn,
    SubscriberCreate,
    SubscriberUpdate,
)
from outreach.subscribers.tokens import (
    is_valid,
    make_token,
    new_selector,
    selector_of,
    token_secrets,
)

log = structlog.get_logger("outreach.subscribers")

ACCEPTED = orjson.dumps({"status": "ACCEPTED"})
CSV_HEADER = [
    "id",
    "email",
    "name",
    "status",
    "source",
    "subscribedAt",
    "unsubscribedAt",
    "unsubscribeUrl",
]
# Spreadsheets run cells starting with these as formulas (OWASP CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CHUNK_BYTES = 32_768


def to_out(row: Any) -> dict[str, Any]:
    """SubscriberOut's JSON of a row (a record or mapping, or the ORM object), without
    pydantic: once per subscribe (the event) and per row of a list page. The tests compare
    it with what GET /subscribers/{id} answers."""
    get = partial(getattr, row) if isinstance(row, Subscriber) else row.__getitem__
    unsubscribed, deleted = get("unsubscribed_at"), get("deleted_at")
    created, updated, subscribed = get("created_at"), get("updated_at"), get("subscribed_at")
    created_text = format_time(created)  # a new subscriber's three times are one: format once
    return {
        "id": str(get("id")),
        "email": get("email"),
        "name": get("name"),
        "source": get("source"),
        "status": str(get("status")),
        "subscribedAt": created_text if subscribed == created else format_time(subscribed),
        "unsubscribedAt": format_time(unsubscribed) if unsubscribed is not None else None,
        "createdAt": created_text,
        "updatedAt": created_text if updated == created else format_time(updated),
        "deletedAt": format_time(deleted) if deleted is not None else None,
    }


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = format_time(value) if hasattr(value, "astimezone") else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


class SubscriberService:
    def _publish(self, rt: Runtime, event: str, row: Any) -> None:
        rt.metrics.subscriber_event[event.partition(".")[2]].inc()
        payload = to_out(row)
        rt.events.publish(event, payload, subscriberId=payload["id"])

    async def subscribe(
        self, rt: Runtime, body: SubscribeIn, *, idempotency_key: str | None
    ) -> Outcome:
        changed: dict[str, Any] = {}

        async def work(conn: FastConn) -> tuple[int, bytes]:
            now = utcnow()
            row = await repository.subscribe(
                conn,
                rt.fastdb.dialect,
                {
                    "id": rt.ids.next_id(),
                    "email": body.email,
                    "name": body.name,
                    "source": body.source,
                    "status": SubscriberStatus.ACTIVE.value,
                    "subscribed_at": now,
                    "unsubscribed_at": None,
                    # The token is derived from this when a link is made: nothing to compute.
                    "unsubscribe_selector": new_selector(),
                    "legacy_token_hash": None,
                    "search_text": search_key(body.email, body.name),
                    "created_at": now,
                    "updated_at": now,
                    "deleted_at": None,
                },
            )
            if row is not None:
                changed["row"] = dict(row)
            # The same answer whatever happened: nobody learns who is subscribed.
            return 202, ACCEPTED

        # Hashed only with an Idempotency-Key (core/idempotency.py).
        payload = body.model_dump(mode="json") if idempotency_key is not None else None
        outcome = await run_once(rt.fastdb, "subscribers.subscribe", idempotency_key, payload, work)
        if "row" in changed:
            self._publish(rt, "subscriber.subscribed", changed["row"])
        return outcome

    async def unsubscribe(self, rt: Runtime, token: str) -> None:
        """Deactivate the subscriber holding `token`; NotFound for any other token."""
        selector = selector_of(token)
        found = await repository.find_by_selector(rt.fastdb, selector) if selector else None
        if (
            selector is None
            or found is None
            or not is_valid(token_secrets(rt.settings), selector, found["legacy_token_hash"], token)
        ):
            raise NotFound("Unknown or expired unsubscribe link")
        if found["status"] == SubscriberStatus.UNSUBSCRIBED.value:
            return
        row = await repository.unsubscribe(rt.fastdb, found["id"], utcnow())
        if row is not None:
            self._publish(rt, "subscriber.unsubscribed", dict(row))

    async def get(
        self,
        session: AsyncSession,
        raw_id: str,
        *,
        include_deleted: bool = False,
        lock: bool = False,
    ) -> Subscriber:
        subscriber_id = parse_id(raw_id)
        found = None
        if subscriber_id is not None:
            found = await repository.get(
                session, subscriber_id, include_deleted=include_deleted, lock=lock
            )
        if found is None:
            raise NotFound("No such subscriber")
        return found

    async def page(
        self, db: FastDB, query: ListQuery, statuses: list[SubscriberStatus] | None
    ) -> bytes:
        """The JSON of a SubscriberPage."""
        rows, next_cursor, total = await repository.page(db, query, statuses)
        return page_body([to_out(r) for r in rows], query.limit, next_cursor, total)

    async def create(
        self, session: AsyncSession, rt: Runtime, body: SubscriberCreate
    ) -> Subscriber:
        if await repository.live_email_taken(session, body.email):
            raise EmailTaken("A subscriber with this email exists")
        now = utcnow()
        subscriber = Subscriber(
            id=rt.ids.next_id(),
            email=body.email,
            name=body.name,
            source=body.source,
            status=SubscriberStatus.ACTIVE.value,
            subscribed_at=now,
            unsubscribed_at=None,
            unsubscribe_selector=new_selector(),
            legacy_token_hash=None,
            search_text=search_key(body.email, body.name),
            created_at=now,
            updated_at=now,
            deleted_at=None,
        )
        session.add(subscriber)
        try:
            await session.flush()
        except IntegrityError:
            raise EmailTaken("A subscriber with this email exists") from None
        after_commit(session, lambda: self._publish(rt, "subscriber.subscribed", subscriber))
        return subscriber

    async def update(
        self, session: AsyncSession, rt: Runtime, raw_id: str, body: SubscriberUpdate
    ) -> Subscriber:
        subscriber = await self.get(session, raw_id, lock=True)
        now = utcnow()
        changed = False
        event: str | None = None
        if "name" in body.model_fields_set and body.name != subscriber.name:
            subscriber.name = body.name
            subscriber.search_text = search_key(subscriber.email, body.name)
            changed = True
        if body.status is not None and body.status != subscriber.status:
            subscriber.status = body.status.value
            if body.status == SubscriberStatus.ACTIVE:
                subscriber.subscribed_at = now
                subscriber.unsubscribed_at = None
                # A new selector kills the old token, derived or legacy.
                subscriber.unsubscribe_selector = new_selector()
                subscriber.legacy_token_hash = None
                event = "subscriber.subscribed"
            else:
                subscriber.unsubscribed_at = now
                event = "subscriber.unsubscribed"
            changed = True
        if changed:
            subscriber.updated_at = now
            await session.flush()
        if event is not None:
            name = event
            after_commit(session, lambda: self._publish(rt, name, subscriber))
        return subscriber

    async def delete(self, session: AsyncSession, raw_id: str) -> None:
        subscriber = await self.get(session, raw_id, lock=True)
        subscriber.deleted_at = subscriber.updated_at = utcnow()
        await session.flush()

    async def restore(self, session: AsyncSession, raw_id: str) -> Subscriber:
        subscriber = await self.get(session, raw_id, include_deleted=True, lock=True)
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

    async def export_csv(
        self,
        engine: AsyncEngine,
        rt: Runtime,
        query: ListQuery,
        statuses: list[SubscriberStatus] | None,
        actor: AuthPrincipal,
    ) -> ExportStream:
        """The CSV export, started: its query has run and its first chunk is read, so a
        database failing at the start raises here, before anything is sent (problem+json).
        A failure later raises ExportAborted from the stream. Logged at start and at end."""
        log.info("Subscribers export started", exportedBy=actor.sub, **_filters(query, statuses))
        tally = _Tally()
        chunks = self._chunks(engine, rt, query, statuses, tally)
        try:
            first = await anext(chunks)
        except BaseException as exc:
            _log_end(actor, tally, type(exc).__name__)
            raise
        return ExportStream(first, chunks, tally, actor)

    async def _chunks(
        self,
        engine: AsyncEngine,
        rt: Runtime,
        query: ListQuery,
        statuses: list[SubscriberStatus] | None,
        tally: _Tally,
    ) -> AsyncGenerator[bytes, None]:
        """The CSV in chunks of about CHUNK_BYTES, from a server-side cursor."""
        base = f"{rt.settings.public_url}{rt.settings.base_path}/subscribers/unsubscribe?token="
        keys = token_secrets(rt.settings)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        count = 0
        stmt, params = repository.export_query(engine.dialect.name, query, statuses)
        async with engine.connect() as conn:
            result = await conn.stream(stmt.execution_options(yield_per=500), params)
            async for row in result:
                writer.writerow(
                    [
                        csv_cell(str(row.id)),
                        csv_cell(row.email),
                        csv_cell(row.name),
                        csv_cell(row.status),
                        csv_cell(row.source),
                        csv_cell(row.subscribed_at),
                        csv_cell(row.unsubscribed_at),
                        # Derived, so every row gets a working link, pre-0007 ones included.
                        base + make_token(keys, row.unsubscribe_selector),
                    ]
                )
                count += 1
                if buffer.tell() > CHUNK_BYTES:
                    tally.rows = count
                    yield buffer.getvalue().encode()
                    buffer.seek(0)
                    buffer.truncate()
        tally.rows = count
        yield buffer.getvalue().encode()


class ExportAborted(Exception):
    """Raised from the CSV stream after its first bytes went out. The server then closes the
    connection without the chunked body's last chunk, so the client sees a broken download,
    never a short file that looks complete. No handler knows this type, so none tries to
    send an error answer after the response has started."""


class ExportStream:
    """A started export's chunks, iterated once. close() ends it however it went (done, a
    failure, a client that left, never iterated): the cursor's connection is released and
    the end line written, once."""

    def __init__(
        self, first: bytes, chunks: AsyncGenerator[bytes, None], tally: _Tally, actor: AuthPrincipal
    ) -> None:
        self._first = first
        self._chunks = chunks
        self._tally = tally
        self._actor = actor
        self._error: str | None = "NotRead"
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            yield self._first
            async for chunk in self._chunks:
                yield chunk
            self._error = None
        except BaseException as exc:  # GeneratorExit, CancelledError: the client left
            self._error = type(exc).__name__
            if isinstance(exc, Exception):
                # Not the driver's own error: the app's handlers know those and would try to
                # answer after the response started. `from None`: its text may hold data.
                raise ExportAborted("The export failed part-way") from None
            raise
        finally:
            await self.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._chunks.aclose()
            _log_end(self._actor, self._tally, self._error)


@dataclass(slots=True)
class _Tally:
    rows: int = 0  # in the chunks handed to the server


def _filters(query: ListQuery, statuses: list[SubscriberStatus] | None) -> dict[str, Any]:
    """The export's filters for its log line: `q` is personal data (part of an address or a
    name), so only whether one was given."""
    given: dict[str, Any] = {"search": query.q is not None, "order": query.order}
    if statuses:
        given["status"] = ",".join(s.value for s in statuses)
    if query.created_from is not None:
        given["createdFrom"] = format_time(query.created_from)
    if query.created_to is not None:
        given["createdTo"] = format_time(query.created_to)
    return given


def _log_end(actor: AuthPrincipal, tally: _Tally, error: str | None) -> None:
    if error is None:
        log.info("Subscribers exported", exportedBy=actor.sub, rows=tally.rows, outcome="complete")
    else:
        log.warning(
            "Subscribers exported",
            exportedBy=actor.sub,
            rows=tally.rows,
            outcome="failed",
            error=error,
        )


subscriber = SubscriberService()
