"""The CSV export of live subscribers with their unsubscribe links (API.md section 5).

Started before the answer: its query runs and its first chunk is read, so a database failing
at the start answers problem+json and sends nothing. A failure after rows went out aborts
the connection (ExportAborted): the client sees a broken download, never a short file that
looks complete. Logged when it starts and when it ends (rows, outcome), never with tokens.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from outreach.auth.principal import AuthPrincipal
from outreach.core.schemas import format_time
from outreach.db.listing import ListQuery
from outreach.state import State
from outreach.subscribers import repository
from outreach.subscribers.models import SubscriberStatus
from outreach.subscribers.tokens import make_token, token_secrets

log = structlog.get_logger("outreach.subscribers")

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


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = format_time(value) if hasattr(value, "astimezone") else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


async def start_export(
    state: State,
    query: ListQuery,
    statuses: list[SubscriberStatus] | None,
    actor: AuthPrincipal,
) -> ExportStream:
    """The CSV export, started (see the module docstring)."""
    log.info("Subscribers export started", exportedBy=actor.sub, **_filters(query, statuses))
    tally = _Tally()
    chunks = _chunks(state, query, statuses, tally)
    try:
        first = await anext(chunks)
    except BaseException as exc:
        _log_end(actor, tally, type(exc).__name__)
        raise
    return ExportStream(first, chunks, tally, actor)


async def _chunks(
    state: State,
    query: ListQuery,
    statuses: list[SubscriberStatus] | None,
    tally: _Tally,
) -> AsyncGenerator[bytes, None]:
    """The CSV in chunks of about CHUNK_BYTES, from a server-side cursor."""
    settings = state.settings
    base = f"{settings.public_url}{settings.base_path}/subscribers/unsubscribe?token="
    keys = token_secrets(settings)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    count = 0
    engine = state.engine
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


class ExportResponse(StreamingResponse):
    """The CSV stream, closed however the response ends (the client may leave, or never
    get the first byte), so the cursor's connection goes back and the end line is logged."""

    def __init__(self, stream: ExportStream) -> None:
        super().__init__(
            stream,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": 'attachment; filename="subscribers.csv"',
                "Cache-Control": "no-store",
            },
        )
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.stream.close()
