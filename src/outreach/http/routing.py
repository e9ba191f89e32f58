"""Route class that answers 415 for a body of the wrong content type, before validation."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from outreach.core.errors import UnsupportedMediaType

JSON_TYPES = frozenset({"application/json"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class ContentTypeRoute(APIRoute):
    """Routes with a JSON body accept only JSON. (The public routes read their own bodies and
    check the type themselves: core/public.py, subscribers/router.py.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            kind = media_type(request)
            if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
                raise UnsupportedMediaType("Send the body as application/json")
            if not kind and request.headers.get("content-length", "0") not in ("0", ""):
                raise UnsupportedMediaType("Content-Type is required for a body")
            return await handler(request)

        return checked
