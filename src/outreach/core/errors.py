"""Problem details (RFC 9457): one exception hierarchy and one renderer.

How the framework's, the drivers' and unexpected exceptions become these answers is HTTP
plumbing: outreach/http/errors.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from outreach.core.context import request_id_var

PROBLEM_BASE = "https://outreach.example/problems/"
PROBLEM_JSON = "application/problem+json"


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


class AlreadyListed(Conflict):
    slug, title = "already-listed", "Already on the blocklist"


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
