"""Inquiry routes: the public contact form and the staff portal's triage."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import problem_responses
from outreach.core.schemas import json_data
from outreach.db.listing import ListQuery
from outreach.http.deps import SessionDep, require
from outreach.http.params import SnowflakeId, include_deleted_dependency, list_query_dependency
from outreach.http.public import answer, idempotency_key, json_body_doc, public_caller
from outreach.http.routing import Router, read_json
from outreach.inquiries.models import InquiryStatus
from outreach.inquiries.schemas import (
    BulkStatus,
    BulkStatusOut,
    InquiryOut,
    InquiryPage,
    InquirySubmit,
    InquiryUpdate,
    SubmitOut,
    inquiry_json,
)
from outreach.inquiries.service import inquiry as inquiry_service
from outreach.state import StateDep
from outreach.templates import pick_language

router = Router()
ADMIN = problem_responses(401, 403, 422, 503)

Reader = Annotated[AuthPrincipal, require("inquiries", "read")]
Updater = Annotated[AuthPrincipal, require("inquiries", "update")]
Deleter = Annotated[AuthPrincipal, require("inquiries", "delete")]
Restorer = Annotated[AuthPrincipal, require("inquiries", "restore")]
Listing = Annotated[ListQuery, list_query_dependency("inquiries")]
IncludeDeleted = Annotated[bool, include_deleted_dependency("inquiries")]


@router.public_post(
    "/inquiries/submit",
    status_code=201,
    response_model=SubmitOut,
    tags=["public"],
    openapi_extra=json_body_doc(InquirySubmit, idempotency=True),
    responses=problem_responses(400, 409, 413, 415, 422, 429, 503),
)
async def submit_inquiry(request: Request) -> Response:
    """Send an inquiry from the website's contact form (public)."""
    caller = await public_caller(request)
    key = idempotency_key(request)
    body = await read_json(request, InquirySubmit)
    outcome = await inquiry_service.submit(
        caller.state,
        body,
        client_ip=caller.client_ip,
        user_agent=caller.user_agent,
        idempotency_key=key,
        language=pick_language(caller.accept_language),
    )
    return answer(outcome)


@router.get("/inquiries", response_model=InquiryPage, tags=["inquiries"], responses=ADMIN)
async def list_inquiries(
    state: StateDep,
    _: Reader,
    listing: Listing,
    status: Annotated[list[InquiryStatus] | None, Query(description="Repeatable")] = None,
    email: Annotated[str | None, Query(max_length=254)] = None,
) -> Response:
    """List inquiries, newest first, with filters and keyset pagination."""
    body = await inquiry_service.page(state, listing, statuses=status, email=email)
    return Response(body, media_type="application/json")


@router.post(
    "/inquiries/bulk-status",
    response_model=BulkStatusOut,
    tags=["inquiries"],
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
)
async def bulk_status(
    body: BulkStatus, session: SessionDep, state: StateDep, actor: Updater
) -> BulkStatusOut:
    """Set one status on up to 500 inquiries (mark a spam flood CANCELLED in one call)."""
    return await inquiry_service.bulk_status(session, state, body, actor)


@router.get(
    "/inquiries/{id}",
    response_model=InquiryOut,
    tags=["inquiries"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_inquiry(
    inquiry_id: SnowflakeId, session: SessionDep, _: Reader, include_deleted: IncludeDeleted
) -> Response:
    """One inquiry."""
    found = await inquiry_service.get(session, inquiry_id, include_deleted=include_deleted)
    return json_data(inquiry_json(found))


@router.patch(
    "/inquiries/{id}",
    response_model=InquiryOut,
    tags=["inquiries"],
    responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
)
async def update_inquiry(
    inquiry_id: SnowflakeId,
    body: InquiryUpdate,
    session: SessionDep,
    state: StateDep,
    actor: Updater,
) -> Response:
    """Change an inquiry's status (allowed transitions only) or note."""
    updated = await inquiry_service.update(session, state, inquiry_id, body, actor)
    return json_data(inquiry_json(updated))


@router.delete(
    "/inquiries/{id}",
    status_code=204,
    tags=["inquiries"],
    responses=problem_responses(401, 403, 404, 503),
)
async def delete_inquiry(
    inquiry_id: SnowflakeId, session: SessionDep, state: StateDep, actor: Deleter
) -> Response:
    """Soft-delete an inquiry (it can be restored)."""
    await inquiry_service.delete(session, state, inquiry_id, actor)
    return Response(status_code=204)


@router.post(
    "/inquiries/{id}/restore",
    response_model=InquiryOut,
    tags=["inquiries"],
    responses=problem_responses(401, 403, 404, 503),
)
async def restore_inquiry(
    inquiry_id: SnowflakeId, session: SessionDep, state: StateDep, actor: Restorer
) -> Response:
    """Restore a soft-deleted inquiry (a no-op for one that is not deleted)."""
    restored = await inquiry_service.restore(session, state, inquiry_id, actor)
    return json_data(inquiry_json(restored))
