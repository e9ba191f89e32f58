"""Subscriber routes: the public newsletter form and unsubscribe link, and the staff portal."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Receive, Scope, Send

from outreach.auth.permissions import require
from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import (
    BadRequest,
    UnsupportedMediaType,
    ValidationFailed,
    problem_responses,
    validation_errors,
)
from outreach.idempotency.service import answer
from outreach.db.listing import ListQuery, include_deleted_dependency, list_query_dependency
from outreach.http.public import idempotency_key, json_body, json_body_doc, public_guard
from outreach.http.routing import FORM_TYPES, JSON_TYPES, ContentTypeRoute, media_type
from outreach.state import RuntimeDep
from outreach.db.base import SessionDep
from outreach.subscribers.models import SubscriberStatus
from outreach.subscribers.schemas import (
    Accepted,
    SubscribeIn,
    SubscriberCreate,
    SubscriberOut,
    SubscriberPage,
    SubscriberUpdate,
    Unsubscribed,
    UnsubscribeIn,
)
from outreach.subscribers.service import ExportStream
from outreach.subscribers.service import subscriber as subscriber_service

router = APIRouter(route_class=ContentTypeRoute)

Reader = Annotated[AuthPrincipal, require("subscribers", "read")]
Creator = Annotated[AuthPrincipal, require("subscribers", "create")]
Updater = Annotated[AuthPrincipal, require("subscribers", "update")]
Deleter = Annotated[AuthPrincipal, require("subscribers", "delete")]
Restorer = Annotated[AuthPrincipal, require("subscribers", "restore")]
Exporter = Annotated[AuthPrincipal, require("subscribers", "export")]
Listing = Annotated[ListQuery, list_query_dependency("subscribers")]
IncludeDeleted = Annotated[bool, include_deleted_dependency("subscribers")]
StatusFilter = Annotated[list[SubscriberStatus] | None, Query(description="Repeatable")]

UNSUBSCRIBED = orjson.dumps({"status": "UNSUBSCRIBED"})
_UNSUBSCRIBE_BODY: dict[str, Any] = {
    "required": False,
    "content": {
        "application/json": {"schema": UnsubscribeIn.model_json_schema()},
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {
                    "token": {"type": "string", "maxLength": 128},
                    "List-Unsubscribe": {"type": "string", "enum": ["One-Click"]},
                },
            }
        },
    },
}


@router.post(
    "/subscribers/subscribe",
    status_code=202,
    response_model=Accepted,
    tags=["public"],
    openapi_extra=json_body_doc(SubscribeIn, idempotency=True),
    responses=problem_responses(400, 409, 413, 415, 422, 429, 503),
)
async def subscribe(request: Request) -> Response:
    """Subscribe to the newsletter (public). The answer is the same for every valid body."""
    await public_guard(request)
    key = idempotency_key(request)
    body = await json_body(request, SubscribeIn)
    outcome = await subscriber_service.subscribe(
        request.app.state.runtime, body, idempotency_key=key
    )
    return answer(outcome)


async def _token_from_body(request: Request) -> str | None:
    kind = media_type(request)
    # The fast lane (core/public.py) skips ContentTypeRoute: check the type here too.
    if kind and kind not in FORM_TYPES and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaType("Send the token as JSON, a form field or ?token=")
    if kind in FORM_TYPES:
        try:
            form = await request.form(max_files=0, max_fields=8)
        except (HTTPException, MultiPartException):  # Starlette's 400 for a broken form
            raise BadRequest("The form body cannot be read") from None
        value = form.get("token")
        return value.strip() if isinstance(value, str) and value.strip() else None
    raw = await request.body()
    if not raw.strip():
        return None
    if not kind:
        raise UnsupportedMediaType("Content-Type is required for a body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("The body is not valid JSON") from None
    try:
        return UnsubscribeIn.model_validate(data).token
    except ValidationError as exc:
        raise ValidationFailed(
            "The request has invalid fields", errors=validation_errors(exc.errors())
        ) from None


@router.post(
    "/subscribers/unsubscribe",
    response_model=Unsubscribed,
    tags=["public"],
    openapi_extra={"requestBody": _UNSUBSCRIBE_BODY},
    responses=problem_responses(400, 404, 413, 415, 422, 429, 503),
)
async def unsubscribe(
    request: Request,
    token: Annotated[
        str | None, Query(max_length=128, description="The token from the unsubscribe link")
    ] = None,
) -> Response:
    """Leave the newsletter with the secret token: JSON, form field or `?token=` (RFC 8058)."""
    await public_guard(request)
    if token is None:  # the fast lane calls this handler directly: read the query itself
        token = request.query_params.get("token")
    if token is not None and len(token) > 128:
        raise ValidationFailed("token is too long", errors=[("token", "at most 128 characters")])
    given = await _token_from_body(request) or (token.strip() if token else None)
    if not given:
        raise ValidationFailed(
            "An unsubscribe token is required", errors=[("token", "field required")]
        )
    await subscriber_service.unsubscribe(request.app.state.runtime, given)
    return Response(UNSUBSCRIBED, media_type="application/json")


ADMIN = problem_responses(401, 403, 422, 503)


@router.get("/subscribers", response_model=SubscriberPage, tags=["subscribers"], responses=ADMIN)
async def list_subscribers(
    rt: RuntimeDep, _: Reader, listing: Listing, status: StatusFilter = None
) -> Response:
    """List subscribers, newest first, with filters and keyset pagination."""
    body = await subscriber_service.page(rt.fastdb, listing, status)
    return Response(body, media_type="application/json")


@router.post(
    "/subscribers",
    status_code=201,
    response_model=SubscriberOut,
    tags=["subscribers"],
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
)
async def create_subscriber(
    body: SubscriberCreate, session: SessionDep, rt: RuntimeDep, _: Creator
) -> SubscriberOut:
    """Add an ACTIVE subscriber; 409 when the email is taken."""
    return SubscriberOut.model_validate(await subscriber_service.create(session, rt, body))


class ExportResponse(StreamingResponse):
    """The CSV stream, closed however the response ends (the client may leave, or never
    get the first byte), so the cursor's connection goes back and the end line is logged."""

    def __init__(self, stream: ExportStream, **kwargs: Any) -> None:
        super().__init__(stream, **kwargs)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.stream.close()


@router.get(
    "/subscribers/export",
    tags=["subscribers"],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "CSV with a header row",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **ADMIN,
    },
)
async def export_subscribers(
    request: Request, rt: RuntimeDep, actor: Exporter, listing: Listing, status: StatusFilter = None
) -> StreamingResponse:
    """Live subscribers as CSV with their unsubscribe links, for the mailing tool (OWNER)."""
    live = ListQuery(
        limit=listing.limit,
        cursor=None,
        order=listing.order,
        include_deleted=False,
        q=listing.q,
        created_from=listing.created_from,
        created_to=listing.created_to,
    )
    # Awaited here: the query runs and the first rows are read before the answer starts, so
    # a database that fails now answers problem+json (503/500) instead of a 200 and no rows.
    stream = await subscriber_service.export_csv(request.app.state.engine, rt, live, status, actor)
    return ExportResponse(
        stream,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="subscribers.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/subscribers/{subscriber_id}",
    response_model=SubscriberOut,
    tags=["subscribers"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_subscriber(
    subscriber_id: str, session: SessionDep, _: Reader, include_deleted: IncludeDeleted
) -> SubscriberOut:
    """One subscriber."""
    found = await subscriber_service.get(session, subscriber_id, include_deleted=include_deleted)
    return SubscriberOut.model_validate(found)


@router.patch(
    "/subscribers/{subscriber_id}",
    response_model=SubscriberOut,
    tags=["subscribers"],
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 503),
)
async def update_subscriber(
    subscriber_id: str, body: SubscriberUpdate, session: SessionDep, rt: RuntimeDep, _: Updater
) -> SubscriberOut:
    """Change a subscriber's name or status."""
    updated = await subscriber_service.update(session, rt, subscriber_id, body)
    return SubscriberOut.model_validate(updated)


@router.delete(
    "/subscribers/{subscriber_id}",
    status_code=204,
    tags=["subscribers"],
    responses=problem_responses(401, 403, 404, 503),
)
async def delete_subscriber(subscriber_id: str, session: SessionDep, _: Deleter) -> Response:
    """Soft-delete a subscriber (it can be restored)."""
    await subscriber_service.delete(session, subscriber_id)
    return Response(status_code=204)


@router.post(
    "/subscribers/{subscriber_id}/restore",
    response_model=SubscriberOut,
    tags=["subscribers"],
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def restore_subscriber(subscriber_id: str, session: SessionDep, _: Restorer) -> SubscriberOut:
    """Restore a soft-deleted subscriber; 409 when a live subscriber now has its email."""
    return SubscriberOut.model_validate(await subscriber_service.restore(session, subscriber_id))
