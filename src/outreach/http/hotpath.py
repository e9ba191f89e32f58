"""The served app's outermost ASGI callable: the hot routes answered in one step.

The probes (`/healthz`, `/readyz`, at the root and under the base path) and the public POSTs
(`Router.public_post`: submit, subscribe, unsubscribe, confirm) are looked up by exact
(method, path) and answered here, with the request id, body limit, access log line and HTTP
metrics done inline — the same rules, answers, log line and series as
`RequestContextMiddleware` (http/middleware.py), which still serves every other route inside
FastAPI. No Starlette middleware stack, no FastAPI routing or dependency solving: measured
in bench/ (`make bench`, the yardstick ratios), that is most of a small request's cost.
FastAPI still documents these routes (they are registered there too) and answers them where
this step does not apply: a CORS request (an `Origin` header while CORS_ALLOW_ORIGINS is
set) goes through the full stack so CORSMiddleware answers it. docs/adr/0012.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outreach.core.context import request_id_var
from outreach.core.errors import PayloadTooLarge, error_response
from outreach.core.logging import access_line
from outreach.core.metrics import Metrics
from outreach.http.errors import render_exception
from outreach.http.middleware import MAX_BODY, REQUEST_ID, limited, nul_in_query
from outreach.http.probes import HEALTHZ_BODY
from outreach.state import State

Handler = Callable[[Request], Awaitable[Response]]

# /healthz never changes: its answer's headers are made once (a Starlette Response's own:
# content-length, then content-type); only the request id is added per request.
HEALTHZ = object()
_HEALTHZ_HEADERS = (
    (b"content-length", str(len(HEALTHZ_BODY)).encode()),
    (b"content-type", b"application/json"),
)
_HEALTHZ_BODY: Message = {"type": "http.response.body", "body": HEALTHZ_BODY}
_CLOSE = (b"connection", b"close")


class OutreachApp:
    """Hot routes here, everything else (other routes, Socket.IO, lifespan) to `inner`."""

    def __init__(
        self,
        api: ASGIApp,
        inner: ASGIApp,
        *,
        state: State,
        routes: dict[tuple[str, str], Handler | object],
        metrics: Metrics | None,
        cors: bool,
        max_body: int = MAX_BODY,
    ) -> None:
        self.api = api  # the FastAPI app: `request.app` of the hot handlers
        self.inner = inner
        self.state = state
        self.routes = routes
        self.metrics = metrics
        self.cors = cors
        self.max_body = max_body
        # Each series' child once (`labels()` per request costs a lock and a lookup).
        self._counts: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.routes.get((scope["method"], scope["path"]))
            if route is not None:
                await self._hot(scope, receive, send, route)
                return
        await self.inner(scope, receive, send)

    async def _hot(self, scope: Scope, receive: Receive, send: Send, route: Any) -> None:
        given = length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if given is None:
                    given = value
            elif key == b"content-length":
                if length is None:
                    length = value
            elif key == b"origin" and self.cors:
                await self.inner(scope, receive, send)  # CORSMiddleware's to answer
                return
        rid = given.decode("latin-1") if given else ""
        if not REQUEST_ID.fullmatch(rid):
            rid = os.urandom(16).hex()
        token = request_id_var.set(rid)
        start = time.perf_counter()
        extra = [(b"x-request-id", rid.encode())]
        state = self.state
        if state.serving and state.shutting_down:
            extra.append(_CLOSE)  # keep-alive clients go elsewhere (main._ServeGuard)
        status = 500
        path = scope["path"]  # every hot route is a literal path: its own template
        try:
            if route is HEALTHZ:
                status = 200
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [*_HEALTHZ_HEADERS, *extra],
                    }
                )
                await send(_HEALTHZ_BODY)
                return
            started = False

            async def send_with_id(message: Message) -> None:
                nonlocal status, started
                if message["type"] == "http.response.start":
                    status = message["status"]
                    started = True
                    message["headers"] = [*message.get("headers", ()), *extra]
                await send(message)

            scope["app"] = self.api
            request = Request(scope, limited(receive, self.max_body))
            try:
                # Refused before routing, as the framework's stack does: labelled unmatched.
                if length is not None and (not length.isdigit() or int(length) > self.max_body):
                    path = "unmatched"
                    response = error_response(PayloadTooLarge("The body may be at most 64 KiB"))
                elif b"%00" in (query := scope.get("query_string", b"")) or b"\x00" in query:
                    path = "unmatched"
                    response = error_response(nul_in_query(query))
                else:
                    try:
                        response = await route(request)
                    except Exception as exc:  # noqa: BLE001 - answered as the app answers it
                        response = await render_exception(request, exc)
                await response(scope, receive, send_with_id)
            except Exception as exc:
                # Once the answer has begun there is nothing to render: the server aborts.
                if started:
                    raise
                response = await render_exception(request, exc)
                await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            method = scope["method"]
            if self.metrics is not None:
                count = self._counts.get((method, path, status))
                if count is None:
                    count = self.metrics.http_requests.labels(method, path, str(status))
                    self._counts[(method, path, status)] = count
                count.inc()
                duration = self._durations.get((method, path))
                if duration is None:
                    duration = self.metrics.http_duration.labels(method, path)
                    self._durations[(method, path)] = duration
                duration.observe(elapsed)
            access_line(method, path, status, round(elapsed * 1000, 2))
            request_id_var.reset(token)
