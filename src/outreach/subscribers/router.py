"""Subscriber routes: the public newsletter form and unsubscribe link, and the staff portal."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import (
    BadRequest,
    UnsupportedMediaType,
    ValidationFailed,
    problem_responses,
)
from outreach.core.schemas import json_data
from outreach.db.listing import ListQuery
from outreach.http.deps import SessionDep, require
from outreach.http.params import SnowflakeId, include_deleted_dependency, list_query_dependency
from outreach.http.public import answer, idempotency_key, json_body_doc, public_caller
from outreach.http.routing import FORM_TYPES, Router, is_json, media_type, parse_json, read_json
from outreach.state import StateDep
from outreach.subscribers.export import ExportResponse, start_export
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
    subscriber_json,
)
from outreach.subscribers.service import subscriber as subscriber_service

router = Router()

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


@router.public_post(
    "/subscribers/subscribe",
    status_code=202,
    response_model=Accepted,
    tags=["public"],
    openapi_extra=json_body_doc(SubscribeIn, idempotency=True),
    responses=problem_responses(400, 409, 413, 415, 422, 429, 503),
)
async def subscribe(request: Request) -> Response:
    """Subscribe to the newsletter (public). The answer is the same for every valid body."""
    caller = await public_caller(request)
    key = idempotency_key(request)
    body = await read_json(request, SubscribeIn)
    if caller.state.captcha.enabled:
        await caller.state.captcha.check([request.headers.get("x-altcha"), body.altcha], key)
    outcome = await subscriber_service.subscribe(
        caller.state, body, client_ip=caller.client_ip, idempotency_key=key
    )
    return answer(outcome)


async def _token_from_body(request: Request) -> str | None:
    """The token of a JSON or form body (RFC 8058 one-click posts a form); None without."""
    kind = media_type(request)
    if kind and kind not in FORM_TYPES and not is_json(kind):
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
    return parse_json(raw, UnsubscribeIn).token


@router.public_post(
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
    caller = await public_caller(request)
    if token is None:  # the fast lane calls this handler directly: read the query itself
        token = request.query_params.get("token")
    if token is not None and len(token) > 128:
        raise ValidationFailed("token is too long", errors=[("token", "at most 128 characters")])
    given = await _token_from_body(request) or (token.strip() if token else None)
    if not given:
        raise ValidationFailed(
            "An unsubscribe token is required", errors=[("token", "field required")]
        )
    await subscriber_service.unsubscribe(caller.state, given)
    return Response(UNSUBSCRIBED, media_type="application/json")


ADMIN = problem_responses(401, 403, 422, 503)


@router.get("/subscribers", response_model=SubscriberPage, tags=["subscribers"], responses=ADMIN)
async def list_subscribers(
    state: StateDep, _: Reader, listing: Listing, status: StatusFilter = None
) -> Response:
    """List subscribers, newest first, with filters and keyset pagination."""
    body = await subscriber_service.page(state, listing, status)
    return Response(body, media_type="application/json")


@router.post(
    "/subscribers",
    status_code=201,
    response_model=SubscriberOut,
    tags=["subscribers"],
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
)
async def create_subscriber(
    body: SubscriberCreate, session: SessionDep, state: StateDep, _: Creator
) -> Response:
    """Add an ACTIVE subscriber; 409 when the email is taken."""
    created = await subscriber_service.create(session, state, body)
    return json_data(subscriber_json(created), 201)


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
    state: StateDep, actor: Exporter, listing: Listing, status: StatusFilter = None
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
    return ExportResponse(await start_export(state, live, status, actor))


@router.get(
    "/subscribers/{id}",
    response_model=SubscriberOut,
    tags=["subscribers"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_subscriber(
    subscriber_id: SnowflakeId, session: SessionDep, _: Reader, include_deleted: IncludeDeleted
) -> Response:
    """One subscriber."""
    found = await subscriber_service.get(session, subscriber_id, include_deleted=include_deleted)
    return json_data(subscriber_json(found))


@router.patch(
    "/subscribers/{id}",
    response_model=SubscriberOut,
    tags=["subscribers"],
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 503),
)
async def update_subscriber(
    subscriber_id: SnowflakeId,
    body: SubscriberUpdate,
    session: SessionDep,
    state: StateDep,
    _: Updater,
) -> Response:
    """Change a subscriber's name or status."""
    updated = await subscriber_service.update(session, state, subscriber_id, body)
    return json_data(subscriber_json(updated))


@router.delete(
    "/subscribers/{id}",
    status_code=204,
    tags=["subscribers"],
    responses=problem_responses(401, 403, 404, 503),
)
async def delete_subscriber(
    subscriber_id: SnowflakeId, session: SessionDep, _: Deleter
) -> Response:
    """Soft-delete a subscriber (it can be restored)."""
    await subscriber_service.delete(session, subscriber_id)
    return Response(status_code=204)


@router.post(
    "/subscribers/{id}/restore",
    response_model=SubscriberOut,
    tags=["subscribers"],
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def restore_subscriber(
    subscriber_id: SnowflakeId, session: SessionDep, _: Restorer
) -> Response:
    """Restore a soft-deleted subscriber; 409 when a live subscriber now has its email."""
    return json_data(subscriber_json(await subscriber_service.restore(session, subscriber_id)))
