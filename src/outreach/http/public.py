"""The public POST routes' plumbing, and the lane that serves them without FastAPI's machinery.

The public handlers take a Starlette `Request` and do their own parsing (content type, body,
pydantic validation, Idempotency-Key, rate limit) with the same rules and errors as the rest
of the API. They are registered as ordinary FastAPI routes, which document them (the body
schema comes from `json_body_doc`), and `PublicFastLane` dispatches the same handlers
directly, skipping routing, dependency solving and three middleware layers: measured in
bench/, that took submit from ~1,950 to ~2,900 req/s (docs/adr/0005).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from outreach.core.errors import (
    BadRequest,
    OutreachError,
    UnsupportedMediaType,
    ValidationFailed,
    error_response,
    handle_unexpected,
    validation_errors,
)
from outreach.http.ratelimit import public_rate_limit
from outreach.http.routing import JSON_TYPES, media_type

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]

IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7E]{1,255}")
IDEMPOTENCY_DOC = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1..255 printable ASCII characters; the same key and body within 24 h "
    "answers the first response again with `Idempotent-Replayed: true`",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[\x20-\x7E]+$"},
}

# Models whose JSON schema the OpenAPI document must carry (bodies documented by hand).
DOCUMENTED_MODELS: list[type[BaseModel]] = []


def json_body_doc(model: type[BaseModel], *, idempotency: bool = False) -> dict[str, Any]:
    """`openapi_extra` for a handler that reads `model` from a JSON body itself."""
    DOCUMENTED_MODELS.append(model)
    doc: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }
    if idempotency:
        doc["parameters"] = [IDEMPOTENCY_DOC]
    return doc


async def json_body(request: Request, model: type[M]) -> M:
    """The body as `model`: 415 not JSON, 413 too large, 400 malformed, 422 invalid."""
    kind = media_type(request)
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaType("Send the body as application/json")
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            raise BadRequest("The body is not valid JSON") from None
        raise ValidationFailed(
            "The request has invalid fields", errors=validation_errors(errors)
        ) from None


def idempotency_key(request: Request) -> str | None:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(raw):
        raise ValidationFailed(
            "Idempotency-Key must be 1..255 printable ASCII characters",
            errors=[("Idempotency-Key", "1..255 printable ASCII characters")],
        )
    return raw


async def public_guard(request: Request) -> None:
    """What every public route checks first: the optional per-IP rate limit."""
    await public_rate_limit(request)


class PublicFastLane:
    """Serve the public POSTs straight from their handlers (see the module docstring).

    It sits inside the request-context middleware (request id, body limit, access log,
    metrics) and CORS, so those apply unchanged.
    """

    def __init__(self, app: ASGIApp, *, routes: dict[str, Handler]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["outreach.route"] = scope["path"]
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except OutreachError as exc:
            response = error_response(exc)
        except Exception as exc:  # noqa: BLE001 - outage 503 or logged 500, like the app's
            response = await handle_unexpected(request, exc)
        await response(scope, receive, send)
