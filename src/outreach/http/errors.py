"""How exceptions become problem+json answers: the app's handlers, one table for every route
(the public fast lane dispatches through the same table: http/public.py)."""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from outreach.core.errors import (
    ClockBehind,
    Conflict,
    DatabaseUnavailable,
    OutreachError,
    error_response,
    problem_response,
)
from outreach.db.outage import is_database_outage
from outreach.http.routing import invalid_body
from outreach.ids.snowflake import ClockMovedBackwardsError

log = structlog.get_logger("outreach.errors")


async def _on_outreach_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, OutreachError)
    return error_response(exc)


async def _on_validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(invalid_body(exc.errors()))


_HTTP_SLUGS = {
    400: ("malformed-request", "Malformed request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported content type"),
}


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, OutreachError):  # raised while FastAPI read the body (413)
        return error_response(exc.__cause__)
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names only the first matching route's methods; list every route's.
        headers = {"Allow": ", ".join(allowed_methods(request))}
    return problem_response(exc.status_code, slug, title, detail, headers=headers)


# Per app (tests make many): each path pattern of the OpenAPI document and its methods.
_METHODS: weakref.WeakKeyDictionary[Any, list[tuple[re.Pattern[str], list[str]]]] = (
    weakref.WeakKeyDictionary()
)


def allowed_methods(request: Request) -> list[str]:
    table = _METHODS.get(request.app)
    if table is None:
        table = []
        for path, operations in request.app.openapi().get("paths", {}).items():
            pattern = re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")
            table.append((pattern, [m.upper() for m in operations if m != "parameters"]))
        _METHODS[request.app] = table
    path = request.url.path
    # A literal route (`/inquiries/submit`) wins over a template (`/inquiries/{id}`).
    matching = [(p.pattern.count("[^/]+"), methods) for p, methods in table if p.match(path)]
    if not matching:
        return []
    fewest = min(params for params, _ in matching)
    return sorted({m for params, methods in matching if params == fewest for m in methods})


async def _on_integrity(_: Request, exc: Exception) -> Response:
    # A unique index the service did not expect to hit: a race between two writers.
    log.warning("Integrity conflict", error=type(exc).__name__)
    return error_response(Conflict("The change conflicts with existing data"))


async def _on_database(_: Request, exc: Exception) -> Response:
    log.error("Database unavailable", error=type(exc).__name__, reason=str(exc).split("\n")[0])
    return error_response(DatabaseUnavailable("The database did not answer; try again shortly"))


def clock_behind(exc: ClockMovedBackwardsError) -> Response:
    """The clock was stepped back: nothing can be created (ids would repeat) until it has
    caught up with the last id; readiness fails meanwhile (http/probes.py)."""
    log.error("Clock behind the last id", behindMs=exc.behind_ms)
    retry = min(60, max(1, math.ceil(exc.behind_ms / 1000)))
    return error_response(
        ClockBehind(
            "The server's clock went back; try again shortly",
            headers={"Retry-After": str(retry)},
        )
    )


async def _on_clock(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClockMovedBackwardsError)
    return clock_behind(exc)


async def _on_driver_error(request: Request, exc: Exception) -> Response:
    """Database and network errors: an outage is a 503 handled here (not re-raised to the
    server as a crash); anything else is a bug, answered 500 and logged with its trace."""
    if is_database_outage(exc):
        return await _on_database(request, exc)
    return await _on_bug(request, exc)


async def _on_bug(_: Request, exc: Exception) -> Response:
    log.exception("Unhandled error", error=type(exc).__name__)
    return error_response(OutreachError("An unexpected error occurred"))


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

# The one table of how exceptions are answered. FastAPI uses it (install_error_handlers);
# the fast lane and the request-context middleware use it through `render_exception`.
HANDLERS: dict[type[Exception], ExceptionHandler] = {
    OutreachError: _on_outreach_error,
    RequestValidationError: _on_validation,
    StarletteHTTPException: _on_http,
    IntegrityError: _on_integrity,
    ClockMovedBackwardsError: _on_clock,
    OSError: _on_driver_error,
    DBAPIError: _on_driver_error,
    PoolTimeout: _on_driver_error,
    asyncpg.PostgresError: _on_driver_error,
    asyncpg.InterfaceError: _on_driver_error,
}


async def render_exception(request: Request, exc: Exception) -> Response:
    """The answer the app's handlers give `exc` (the most specific class wins), else a 500."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return await handler(request, exc)
    return await _on_bug(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    for cls, handler in HANDLERS.items():
        app.add_exception_handler(cls, handler)
    # Last resort only: RequestContextMiddleware (http/middleware.py) renders unexpected
    # errors itself, inside the request's context (request id in the answer and log line).
    app.add_exception_handler(Exception, render_exception)
