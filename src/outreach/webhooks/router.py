"""Webhook endpoint routes (API.md section 13): OWNER manages where events are POSTed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Response

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import problem_responses
from outreach.core.schemas import json_data
from outreach.db.listing import ListQuery
from outreach.http.deps import SessionDep, require
from outreach.http.params import SnowflakeId
from outreach.http.routing import Router
from outreach.state import StateDep
from outreach.webhooks.schemas import (
    DeliveryPage,
    Queued,
    WebhookCreate,
    WebhookOut,
    WebhookPage,
    WebhookUpdate,
    WebhookWithSecret,
    message_key,
    webhook_json,
)
from outreach.webhooks.service import webhook as webhook_service

router = Router(tags=["webhooks"])

Reader = Annotated[AuthPrincipal, require("webhooks", "read")]
Creator = Annotated[AuthPrincipal, require("webhooks", "create")]
Updater = Annotated[AuthPrincipal, require("webhooks", "update")]
Deleter = Annotated[AuthPrincipal, require("webhooks", "delete")]


async def _page_query(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`nextCursor` of the previous page")
    ] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="By creation")] = "desc",
) -> ListQuery:
    return ListQuery(limit, cursor, order, False, None, None, None)


Paging = Annotated[ListQuery, Depends(_page_query)]
READ = problem_responses(401, 403, 404, 422, 503)
WRITE = problem_responses(400, 401, 403, 404, 413, 415, 422, 503)


def _with_secret(endpoint: Any, secret: str, status: int = 200) -> Response:
    return json_data({**webhook_json(endpoint), "secret": secret}, status)


@router.get("/webhooks", response_model=WebhookPage, responses=READ)
async def list_webhooks(session: SessionDep, _: Reader, paging: Paging) -> Response:
    """List webhook endpoints, newest first (no secrets)."""
    return Response(await webhook_service.page(session, paging), media_type="application/json")


@router.post("/webhooks", status_code=201, response_model=WebhookWithSecret, responses=WRITE)
async def create_webhook(
    body: WebhookCreate, session: SessionDep, state: StateDep, _: Creator
) -> Response:
    """Add an endpoint; the answer carries its signing secret, shown this once only."""
    endpoint, secret = await webhook_service.create(session, state, body)
    return _with_secret(endpoint, secret, 201)


@router.get("/webhooks/{id}", response_model=WebhookOut, responses=READ)
async def get_webhook(endpoint_id: SnowflakeId, session: SessionDep, _: Reader) -> Response:
    """One endpoint, without its secret."""
    return json_data(webhook_json(await webhook_service.get(session, endpoint_id)))


@router.patch("/webhooks/{id}", response_model=WebhookOut, responses=WRITE)
async def update_webhook(
    endpoint_id: SnowflakeId,
    body: WebhookUpdate,
    session: SessionDep,
    state: StateDep,
    _: Updater,
) -> Response:
    """Change an endpoint's url, events, description or active flag (sends nothing to it)."""
    updated = await webhook_service.update(session, state, endpoint_id, body)
    return json_data(webhook_json(updated))


@router.delete("/webhooks/{id}", status_code=204, responses=problem_responses(401, 403, 404, 503))
async def delete_webhook(endpoint_id: SnowflakeId, session: SessionDep, _: Deleter) -> Response:
    """Remove an endpoint; the deliveries queued to it are dropped."""
    await webhook_service.delete(session, endpoint_id)
    return Response(status_code=204)


@router.post(
    "/webhooks/{id}/rotate-secret",
    response_model=WebhookWithSecret,
    responses=problem_responses(401, 403, 404, 503),
)
async def rotate_webhook_secret(
    endpoint_id: SnowflakeId, session: SessionDep, state: StateDep, _: Updater
) -> Response:
    """A new signing secret; the old one keeps signing alongside it for 24 h."""
    endpoint, secret = await webhook_service.rotate(session, state, endpoint_id)
    return _with_secret(endpoint, secret)


@router.post(
    "/webhooks/{id}/test",
    status_code=202,
    response_model=Queued,
    responses=problem_responses(401, 403, 404, 503),
)
async def send_test_event(
    endpoint_id: SnowflakeId, session: SessionDep, state: StateDep, _: Updater
) -> Response:
    """Queue a `webhook.test` delivery to the endpoint."""
    message_id = await webhook_service.test(session, state, endpoint_id)
    return json_data({"status": "QUEUED", "messageId": message_key(message_id)}, 202)


@router.get("/webhooks/{id}/deliveries", response_model=DeliveryPage, responses=READ)
async def list_webhook_deliveries(
    endpoint_id: SnowflakeId, session: SessionDep, _: Reader, paging: Paging
) -> Response:
    """The endpoint's latest delivery attempts, newest first."""
    body = await webhook_service.deliveries(session, endpoint_id, paging)
    return Response(body, media_type="application/json")
