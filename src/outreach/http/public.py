"""The public POST routes' plumbing, and the lane that serves them without FastAPI's machinery.

The public handlers take a Starlette `Request` and do their own parsing (content type, body,
pydantic validation, Idempotency-Key, rate limit) with the same rules and errors as the rest
of the API. They are registered as ordinary FastAPI routes, which document them (the body
schema comes from `json_body_doc`; `Router.public_post` registers both), and
`PublicFastLane` dispatches the same handlers
directly, skipping routing, dependency solving and three middleware layers: measured in
bench/, that took submit from ~1,950 to ~2,900 req/s (docs/adr/0005).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from outreach.core.errors import ValidationFailed
from outreach.http.client import client_ip, user_agent
from outreach.http.errors import render_exception
from outreach.http.routing import Handler
from outreach.idempotency.service import Outcome
from outreach.state import State, state_of

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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends a public POST: what its handler needs besides the body."""

    state: State
    client_ip: str
    user_agent: str | None
    accept_language: str | None  # the language of the mails a visitor gets


async def public_caller(request: Request) -> Caller:
    """What every public POST does first: find the client (once) and apply the optional
    per-IP rate limit (RATE_LIMIT_PUBLIC)."""
    state = state_of(request)
    ip = client_ip(request, state.settings.trusted_proxies)
    if state.rate_limiter is not None:
        await state.rate_limiter.check(ip)
    return Caller(state, ip, user_agent(request), request.headers.get("accept-language"))


def answer(outcome: Outcome[Any]) -> Response:
    """The HTTP answer of a public POST's outcome, marked when it is a replay."""
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return Response(outcome.body, outcome.status, headers=headers, media_type="application/json")


class PublicFastLane:
    """Serve the public POSTs straight from their handlers (see the module docstring).

    It sits inside the request-context middleware (request id, body limit, access log,
    metrics) and CORS, so those apply unchanged; errors are answered by the app's own
    handlers (http/errors.py).
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
        except Exception as exc:  # noqa: BLE001 - answered as the app answers it
            response = await render_exception(request, exc)
        await response(scope, receive, send)
