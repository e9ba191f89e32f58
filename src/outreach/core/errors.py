"""Problem details (RFC 9457): one exception hierarchy, one renderer, every failure."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from outreach.core.context import request_id_var
from outreach.ids.snowflake import ClockMovedBackwardsError

PROBLEM_BASE = "https://outreach.example/problems/"
PROBLEM_JSON = "application/problem+json"

log = structlog.get_logger("outreach.errors")


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(json_schema_extra={"description": "RFC 9457 problem details"})

    type: str
    title: str
    status: int
    detail: str
    requestId: str  # noqa: N815 - wire name
    errors: list[FieldError] | None = None


class OutreachError(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"
    headers: dict[str, str] | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = list(errors) if errors is not None else None
        if headers is not None:
            self.headers = headers


class BadRequest(OutreachError):
    status, slug, title = 400, "malformed-request", "Malformed request"


class Unauthorized(OutreachError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(OutreachError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(OutreachError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(OutreachError):
    status, slug, title = 409, "conflict", "Conflict"


class EmailTaken(Conflict):
    slug, title = "email-taken", "Email already subscribed"


class InvalidTransition(Conflict):
    slug, title = "invalid-transition", "Invalid status transition"


class IdempotencyInFlight(Conflict):
    slug, title = "idempotency-in-flight", "A request with this Idempotency-Key is still running"


class PayloadTooLarge(OutreachError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(OutreachError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported content type"


class ValidationFailed(OutreachError):
    status, slug, title = 422, "validation-failed", "Validation failed"


class IdempotencyKeyReused(ValidationFailed):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused with another body"


class RateLimited(OutreachError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class Unavailable(OutreachError):
    status, slug, title = 503, "unavailable", "Service unavailable"
    headers = {"Retry-After": "5"}


class ClockBehind(Unavailable):
    slug, title = "clock-behind", "Clock behind"


class AuthUnavailable(Unavailable):
    slug, title = "auth-unavailable", "Identity service unavailable"


class DatabaseUnavailable(Unavailable):
    slug, title = "database-unavailable", "Database unavailable"


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    errors: Sequence[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "requestId": request_id_var.get(),
    }
    if errors is not None:
        body["errors"] = [{"field": f, "message": m} for f, m in errors]
    return Response(
        orjson.dumps(body),
        status,
        headers=dict(headers) if headers else None,
        media_type=PROBLEM_JSON,
    )


def error_response(exc: OutreachError) -> Response:
    return problem_response(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        errors=exc.errors,
        headers=dict(exc.headers) if exc.headers else None,
    )


def _field(loc: Sequence[int | str]) -> str:
    parts = list(loc)
    if len(parts) > 1 and parts[0] in {"query", "path", "header", "cookie"}:
        return str(parts[1])  # a parameter's own name, also for repeated ones (status.0)
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def validation_errors(errors: Sequence[Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in errors:
        message = str(err.get("msg", "invalid value"))
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        elif err.get("type") == "missing":
            message = "field required"
        out.append((_field(err.get("loc", ())), message))
    return out


def _is_json_error(errors: Sequence[Any]) -> bool:
    return any(e.get("type") == "json_invalid" for e in errors)


async def _on_outreach_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, OutreachError)
    return error_response(exc)


async def _on_validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if _is_json_error(errors):
        return error_response(BadRequest("The body is not valid JSON"))
    return error_response(
        ValidationFailed("The request has invalid fields", errors=validation_errors(errors))
    )


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


def allowed_methods(request: Request) -> list[str]:
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = []
        for path, operations in request.app.openapi().get("paths", {}).items():
            pattern = re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")
            table.append((pattern, [m.upper() for m in operations if m != "parameters"]))
        request.app.state.allowed_methods = table
    path = request.url.path
    # A literal route (`/inquiries/submit`) wins over a template (`/inquiries/{inquiry_id}`).
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


def is_database_outage(exc: BaseException) -> bool:
    """Connection-level failures (refused, reset, timed out), as opposed to bad SQL."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return False  # a file problem is a bug to see (500 with its trace), not an outage
    if isinstance(exc, PermissionError):
        return False
    if isinstance(exc, OperationalError | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(exc, PoolTimeout):  # every connection busy: overloaded, try again
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (SAInterfaceError, *ASYNCPG_OUTAGES))


# asyncpg's own connection-level failures (the public routes use it without SQLAlchemy).
ASYNCPG_OUTAGES = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


def clock_behind(exc: ClockMovedBackwardsError) -> Response:
    """The clock was stepped back: nothing can be created (ids would repeat) until it has
    caught up with the last id; readiness fails meanwhile (core/probes.py)."""
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


async def handle_unexpected(_: Request, exc: Exception) -> Response:
    if isinstance(exc, OutreachError):
        return error_response(exc)
    if isinstance(exc, ClockMovedBackwardsError):
        return clock_behind(exc)
    if is_database_outage(exc):
        return await _on_database(_, exc)
    log.exception("Unhandled error", error=type(exc).__name__)
    return error_response(OutreachError("An unexpected error occurred"))


async def _on_driver_error(request: Request, exc: Exception) -> Response:
    """Database and network errors: an outage is a 503 handled here (not re-raised to the
    server as a crash); anything else is a bug, answered 500 and logged with its trace."""
    return await handle_unexpected(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OutreachError, _on_outreach_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(IntegrityError, _on_integrity)
    app.add_exception_handler(ClockMovedBackwardsError, _on_clock)
    for driver_error in (
        OSError,
        DBAPIError,
        PoolTimeout,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ):
        app.add_exception_handler(driver_error, _on_driver_error)
    # Last resort only: RequestContextMiddleware (core/http.py) renders unexpected errors
    # itself, inside the request's context (request id in the answer and the log line).
    app.add_exception_handler(Exception, handle_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry for a route: each error it can answer, as problem+json."""
    descriptions = {
        400: "Malformed JSON",
        401: "No or invalid token",
        403: "The role may not do this",
        404: "Unknown or deleted",
        409: "Conflict",
        413: "Body larger than 64 KiB",
        415: "Wrong content type",
        422: "Validation failed",
        429: "Over the rate limit",
        503: "A dependency is unavailable",
    }
    return {
        s: {
            "description": descriptions.get(s, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }
