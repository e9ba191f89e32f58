"""Routers and bodies: JSON only where a body is JSON, one way to read and validate it, and
the public POSTs registered once for both FastAPI and the fast lane (http/public.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from outreach.core.errors import (
    BadRequest,
    OutreachError,
    UnsupportedMediaType,
    ValidationFailed,
    validation_errors,
)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(kind: str) -> bool:
    return kind == "application/json" or kind.endswith("+json")


def check_json_body(request: Request) -> None:
    """415 for a body that is not JSON (a body without a Content-Type included)."""
    kind = media_type(request)
    if kind and not is_json(kind):
        raise UnsupportedMediaType("Send the body as application/json")
    if not kind and request.headers.get("content-length", "0") not in ("0", ""):
        raise UnsupportedMediaType("Content-Type is required for a body")


def invalid_body(errors: Sequence[Any]) -> OutreachError:
    """pydantic's errors as the answer: 400 when the body is not JSON at all, else 422."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadRequest("The body is not valid JSON")
    return ValidationFailed("The request has invalid fields", errors=validation_errors(errors))


def parse_json(raw: bytes, model: type[M]) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_body(exc.errors()) from None


async def read_json(request: Request, model: type[M]) -> M:
    """The body as `model`: 415 not JSON, 413 too large, 400 malformed, 422 invalid."""
    kind = media_type(request)
    if not is_json(kind):
        raise UnsupportedMediaType("Send the body as application/json")
    return parse_json(await request.body(), model)


class ContentTypeRoute(APIRoute):
    """Routes with a JSON body accept only JSON (415 before validation)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            check_json_body(request)
            return await handler(request)

        return checked


class Router(APIRouter):
    """An APIRouter of JSON routes that also knows its public POSTs (`public_post`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(route_class=ContentTypeRoute, **kwargs)
        self.fast_lane: dict[str, Handler] = {}

    def public_post(self, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """A public POST: a FastAPI route (routing, OpenAPI) whose handler takes the Request
        and reads its own body, served by the fast lane without FastAPI's machinery."""

        def register(handler: Handler) -> Handler:
            self.post(path, **kwargs)(handler)
            self.fast_lane[path] = handler
            return handler

        return register
