"""The request-context middleware: request id, body limit, access log line and HTTP metrics
for every route the hot path (http/hotpath.py) does not answer itself; both use the helpers
here, and the hot path does the same in one step."""

from __future__ import annotations

import os
import re
import time
from urllib.parse import parse_qsl

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outreach.core.context import request_id_var
from outreach.core.errors import (
    PayloadTooLarge,
    ValidationFailed,
    error_response,
)
from outreach.core.metrics import Metrics
from outreach.http.errors import render_exception

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_BODY = 64 * 1024

access_log = structlog.get_logger("outreach.access")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def route_template(scope: Scope) -> str:
    # FastAPI >= 0.16x keeps the included router's route in scope["route"] (path without the
    # prefix); its "effective route context" has the full template. tests/http/test_http.py
    # pins this down.
    path = scope.get("outreach.route")  # set by the public fast lane (http/public.py)
    if path:
        return str(path)
    context = scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(context, "path_format", None)
    if not path:
        route = scope.get("route")
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
    # Unmatched paths are one label, never the raw path (ids, tokens, scanners' junk).
    return str(path) if path else "unmatched"


def nul_in_query(query: bytes) -> ValidationFailed:
    """No query parameter of this API may hold NUL (PostgreSQL text cannot; it is never
    meaningful): one rule here rather than one per parameter."""
    names = sorted(
        {name for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
         if "\x00" in value or "\x00" in name}
    ) or ["query"]  # fmt: skip
    return ValidationFailed(
        "Query parameters must not contain NUL characters",
        errors=[
            (name.replace("\x00", "")[:64] or "query", "must not contain NUL") for name in names
        ],
    )


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics | None = None, max_body: int = MAX_BODY
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        rid = given.decode("latin-1") if given else ""
        if not REQUEST_ID.fullmatch(rid):
            rid = os.urandom(16).hex()
        token = request_id_var.set(rid)
        rid_header = (b"x-request-id", rid.encode())
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            length = _header(scope, b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                response = error_response(PayloadTooLarge("The body may be at most 64 KiB"))
                await response(scope, receive, send_with_id)
                return
            query = scope.get("query_string", b"")
            if b"%00" in query or b"\x00" in query:
                response = error_response(nul_in_query(query))
                await response(scope, receive, send_with_id)
                return
            try:
                await self.app(scope, limited(receive, self.max_body), send_with_id)
            except Exception as exc:
                # Starlette would render this 500 outermost, after this context is gone (no
                # request id in the answer or its log line). Once the answer has begun there
                # is nothing to render: the server aborts the connection.
                if started:
                    raise
                response = await render_exception(Request(scope), exc)
                await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            method = scope["method"]
            if self.metrics is not None:
                self.metrics.http_requests.labels(method, route, str(status)).inc()
                self.metrics.http_duration.labels(method, route).observe(elapsed)
            access_log.info(
                "request",
                method=method,
                route=route,
                status=status,
                durationMs=round(elapsed * 1000, 2),
            )
            request_id_var.reset(token)


def limited(receive: Receive, limit: int) -> Receive:
    """Count streamed (chunked) bodies too: past the limit reading the body raises 413."""
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge("The body may be at most 64 KiB")
        return message

    return wrapped
