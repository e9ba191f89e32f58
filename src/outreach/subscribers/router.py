"""Subscriber routes: the public newsletter form and unsubscribe link, and the staff portal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NamedTuple

import orjson
from fastapi import Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import (
    BadRequest,
    NotFound,
    OutreachError,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
    problem_responses,
)
from outreach.core.schemas import json_data
from outreach.db.listing import ListQuery
from outreach.db.outage import is_database_outage
from outreach.http.deps import SessionDep, require
from outreach.http.pages import HTML_DOC, error_page, page, prefers_html
from outreach.http.params import SnowflakeId, include_deleted_dependency, list_query_dependency
from outreach.http.public import answer, idempotency_key, json_body_doc, public_caller
from outreach.http.routing import FORM_TYPES, Router, is_json, media_type, parse_json, read_json
from outreach.state import State, StateDep
from outreach.subscribers.export import ExportResponse, start_export
from outreach.subscribers.models import SubscriberStatus
from outreach.subscribers.schemas import (
    Accepted,
    Confirmed,
    ConfirmIn,
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
from outreach.templates import mask_email, pick_language

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
CONFIRMED = orjson.dumps({"status": "ACTIVE"})
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


_CONFIRM_BODY: dict[str, Any] = {
    "required": False,
    "content": {
        "application/json": {"schema": ConfirmIn.model_json_schema()},
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {"token": {"type": "string", "maxLength": 128}},
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
        caller.state,
        body,
        client_ip=caller.client_ip,
        idempotency_key=key,
        language=pick_language(caller.accept_language),
        user_agent=caller.user_agent,
    )
    return answer(outcome)


class _Posted(NamedTuple):
    token: str | None
    page_form: bool  # a form that is not RFC 8058's one-click body: a person's button


async def _token_from_body(request: Request) -> _Posted:
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
        one_click = form.get("List-Unsubscribe") == "One-Click"
        token = value.strip() if isinstance(value, str) and value.strip() else None
        return _Posted(token, not one_click)
    raw = await request.body()
    if not raw.strip():
        return _Posted(None, False)
    if not kind:
        raise UnsupportedMediaType("Content-Type is required for a body")
    return _Posted(parse_json(raw, UnsubscribeIn).token, False)


async def _posted_token(request: Request) -> tuple[str | None, bool]:
    """The token of a POST (body, else `?token=`), and whether to answer with a page."""
    token = request.query_params.get("token")  # the fast lane calls handlers directly
    if token is not None and len(token) > 128:
        raise ValidationFailed("token is too long", errors=[("token", "at most 128 characters")])
    posted = await _token_from_body(request)
    return posted.token or (token.strip() if token else None), posted.page_form and prefers_html(
        request
    )


def _require(token: str | None, what: str) -> str:
    if not token:
        raise ValidationFailed(f"A {what} token is required", errors=[("token", "field required")])
    return token


async def _or_page(
    request: Request, state: State, html: bool, work: Callable[[], Awaitable[Response]]
) -> Response:
    """`work`'s answer; for a person's form post, its failure as a page, not problem+json."""
    try:
        return await work()
    except Exception as exc:
        if not html:
            raise
        business = state.settings.business
        if isinstance(exc, OutreachError):
            return error_page(request, exc, business=business)
        if is_database_outage(exc):
            return error_page(request, Unavailable(), business=business)
        raise


_TOKEN_QUERY = Annotated[
    str | None, Query(max_length=128, description="The token from the mail's link")
]


@router.public_post(
    "/subscribers/unsubscribe",
    response_model=Unsubscribed,
    tags=["public"],
    openapi_extra={"requestBody": _UNSUBSCRIBE_BODY},
    responses=problem_responses(400, 404, 413, 415, 422, 429, 503),
)
async def unsubscribe(request: Request, token: _TOKEN_QUERY = None) -> Response:
    """Leave the newsletter with the secret token: JSON, form field or `?token=` (RFC 8058).
    A form posted from the unsubscribe page by a browser is answered with a page."""
    del token  # documented here; read by _posted_token (the fast lane skips FastAPI)
    caller = await public_caller(request)
    given, html = await _posted_token(request)

    async def work() -> Response:
        email = await subscriber_service.unsubscribe(caller.state, _require(given, "unsubscribe"))
        if html:
            return page(
                request,
                business=caller.state.settings.business,
                title="unsubscribed_title",
                body="unsubscribed_body",
                email=mask_email(email),
            )
        return Response(UNSUBSCRIBED, media_type="application/json")

    return await _or_page(request, caller.state, html, work)


@router.public_post(
    "/subscribers/confirm",
    response_model=Confirmed,
    tags=["public"],
    openapi_extra={"requestBody": _CONFIRM_BODY},
    responses=problem_responses(400, 404, 413, 415, 422, 429, 503),
)
async def confirm(request: Request, token: _TOKEN_QUERY = None) -> Response:
    """Confirm a double opt-in subscription with the token of its mail: JSON, form field or
    `?token=`. A form posted from the confirm page by a browser is answered with a page."""
    del token
    caller = await public_caller(request)
    given, html = await _posted_token(request)

    async def work() -> Response:
        state = caller.state
        email = await subscriber_service.confirm(state, _require(given, "confirm"))
        if html:
            return page(
                request,
                business=state.settings.business,
                title="confirmed_title",
                body="confirmed_body",
                email=mask_email(email),
            )
        return Response(CONFIRMED, media_type="application/json")

    return await _or_page(request, caller.state, html, work)


PAGE_TOKEN = Annotated[
    str | None, Query(description="The token from the mail's link (any other: a 404 page)")
]


async def _link_page(
    request: Request, token: str | None, title: str, body: str, button: str, action: str, find: Any
) -> Response:
    caller = await public_caller(request)
    state = caller.state

    async def work() -> Response:
        if not token or len(token) > 128:
            raise NotFound("Unknown link")
        email = await find(state, token)
        return page(
            request,
            business=state.settings.business,
            title=title,
            body=body,
            form={"action": action, "token": token, "button": button},
            email=mask_email(email),
        )

    return await _or_page(request, state, True, work)


@router.get(
    "/subscribers/unsubscribe",
    response_class=HTMLResponse,
    tags=["public"],
    # 422 and 429 are the edge's (NUL in a query, RATE_LIMIT_PUBLIC), as for every route.
    responses={**problem_responses(422, 429), **HTML_DOC},
)
async def unsubscribe_page(request: Request, token: PAGE_TOKEN = None) -> Response:
    """The page of an unsubscribe link: which address, and one button. Loading it changes
    nothing (mail scanners follow links); the button POSTs the token."""
    return await _link_page(
        request,
        token,
        "unsubscribe_title",
        "unsubscribe_question",
        "unsubscribe_button",
        "unsubscribe",
        subscriber_service.unsubscribe_page,
    )


@router.get(
    "/subscribers/confirm",
    response_class=HTMLResponse,
    tags=["public"],
    # 422 and 429 are the edge's (NUL in a query, RATE_LIMIT_PUBLIC), as for every route.
    responses={**problem_responses(422, 429), **HTML_DOC},
)
async def confirm_page(request: Request, token: PAGE_TOKEN = None) -> Response:
    """The page of a confirm link (double opt-in): which address, and one button. Loading
    it changes nothing; the button POSTs the token."""
    return await _link_page(
        request,
        token,
        "confirm_title",
        "confirm_question",
        "confirm_page_button",
        "confirm",
        subscriber_service.confirm_page,
    )


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
