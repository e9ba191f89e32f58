"""Inquiry routes: the public contact form and the staff portal's triage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from outreach.auth.permissions import require
from outreach.auth.principal import AuthPrincipal
from outreach.http.client import client_ip, user_agent
from outreach.core.errors import problem_responses
from outreach.idempotency.service import answer
from outreach.db.listing import ListQuery, include_deleted_dependency, list_query_dependency
from outreach.http.public import idempotency_key, json_body, json_body_doc, public_guard
from outreach.http.routing import ContentTypeRoute
from outreach.state import RuntimeDep
from outreach.db.base import SessionDep
from outreach.inquiries.models import InquiryStatus
from outreach.inquiries.schemas import (
    BulkStatus,
    BulkStatusOut,
    InquiryOut,
    InquiryPage,
    InquirySubmit,
    InquiryUpdate,
    SubmitOut,
)
from outreach.inquiries.service import inquiry as inquiry_service

router = APIRouter(route_class=ContentTypeRoute)
ADMIN = problem_responses(401, 403, 422, 503)

Reader = Annotated[AuthPrincipal, require("inquiries", "read")]
Updater = Annotated[AuthPrincipal, require("inquiries", "update")]
Deleter = Annotated[AuthPrincipal, require("inquiries", "delete")]
Restorer = Annotated[AuthPrincipal, require("inquiries", "restore")]
Listing = Annotated[ListQuery, list_query_dependency("inquiries")]
IncludeDeleted = Annotated[bool, include_deleted_dependency("inquiries")]


@router.post(
    "/inquiries/submit",
    status_code=201,
    response_model=SubmitOut,
    tags=["public"],
    openapi_extra=json_body_doc(InquirySubmit, idempotency=True),
    responses=problem_responses(400, 409, 413, 415, 422, 429, 503),
)
async def submit_inquiry(request: Request) -> Response:
    """Send an inquiry from the website's contact form (public)."""
    await public_guard(request)
    key = idempotency_key(request)
    body = await json_body(request, InquirySubmit)
    outcome = await inquiry_service.submit(
        request.app.state.runtime,
        body,
        client_ip=client_ip(request),
        user_agent=user_agent(request),
        idempotency_key=key,
    )
    return answer(outcome)


@router.get("/inquiries", response_model=InquiryPage, tags=["inquiries"], responses=ADMIN)
async def list_inquiries(
    rt: RuntimeDep,
    _: Reader,
    listing: Listing,
    status: Annotated[list[InquiryStatus] | None, Query(description="Repeatable")] = None,
    email: Annotated[str | None, Query(max_length=254)] = None,
) -> Response:
    """List inquiries, newest first, with filters and keyset pagination."""
    body = await inquiry_service.page(rt.fastdb, listing, statuses=status, email=email)
    return Response(body, media_type="application/json")


@router.post(
    "/inquiries/bulk-status",
    response_model=BulkStatusOut,
    tags=["inquiries"],
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
)
async def bulk_status(
    body: BulkStatus, session: SessionDep, rt: RuntimeDep, actor: Updater
) -> BulkStatusOut:
    """Set one status on up to 500 inquiries (mark a spam flood CANCELLED in one call)."""
    return await inquiry_service.bulk_status(session, rt, body, actor)


@router.get(
    "/inquiries/{inquiry_id}",
    response_model=InquiryOut,
    tags=["inquiries"],
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_inquiry(
    inquiry_id: str, session: SessionDep, _: Reader, include_deleted: IncludeDeleted
) -> InquiryOut:
    """One inquiry."""
    found = await inquiry_service.get(session, inquiry_id, include_deleted=include_deleted)
    return InquiryOut.model_validate(found)


@router.patch(
    "/inquiries/{inquiry_id}",
    response_model=InquiryOut,
    tags=["inquiries"],
    responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
)
async def update_inquiry(
    inquiry_id: str, body: InquiryUpdate, session: SessionDep, rt: RuntimeDep, actor: Updater
) -> InquiryOut:
    """Change an inquiry's status (allowed transitions only) or note."""
    updated = await inquiry_service.update(session, rt, inquiry_id, body, actor)
    return InquiryOut.model_validate(updated)


@router.delete(
    "/inquiries/{inquiry_id}",
    status_code=204,
    tags=["inquiries"],
    responses=problem_responses(401, 403, 404, 503),
)
async def delete_inquiry(
    inquiry_id: str, session: SessionDep, rt: RuntimeDep, actor: Deleter
) -> Response:
    """Soft-delete an inquiry (it can be restored)."""
    await inquiry_service.delete(session, rt, inquiry_id, actor)
    return Response(status_code=204)


@router.post(
    "/inquiries/{inquiry_id}/restore",
    response_model=InquiryOut,
    tags=["inquiries"],
    responses=problem_responses(401, 403, 404, 503),
)
async def restore_inquiry(
    inquiry_id: str, session: SessionDep, rt: RuntimeDep, actor: Restorer
) -> InquiryOut:
    """Restore a soft-deleted inquiry (a no-op for one that is not deleted)."""
    restored = await inquiry_service.restore(session, rt, inquiry_id, actor)
    return InquiryOut.model_validate(restored)
