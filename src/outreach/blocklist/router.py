"""Blocklist routes (API.md section 10): who may not write through the public forms."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from outreach.auth.principal import AuthPrincipal
from outreach.blocklist.models import BlockKind
from outreach.blocklist.schemas import BlockCreate, BlockOut, BlockPage, block_json
from outreach.blocklist.service import blocklist as blocklist_service
from outreach.core.errors import problem_responses
from outreach.core.schemas import json_data
from outreach.db.listing import ListQuery
from outreach.http.deps import SessionDep, require
from outreach.http.params import SnowflakeId, page_query_dependency
from outreach.http.routing import Router
from outreach.state import StateDep

router = Router(tags=["blocklist"])

Reader = Annotated[AuthPrincipal, require("blocklist", "read")]
Creator = Annotated[AuthPrincipal, require("blocklist", "create")]
Deleter = Annotated[AuthPrincipal, require("blocklist", "delete")]
Paging = Annotated[ListQuery, page_query_dependency()]


@router.get("/blocklist", response_model=BlockPage, responses=problem_responses(401, 403, 422, 503))
async def list_blocklist(
    state: StateDep,
    _: Reader,
    paging: Paging,
    kind: Annotated[list[BlockKind] | None, Query(description="Repeatable")] = None,
) -> Response:
    """Blocklist entries, newest first; `q` is a substring of the value."""
    body = await blocklist_service.page(state, paging, kind)
    return Response(body, media_type="application/json")


@router.post(
    "/blocklist",
    status_code=201,
    response_model=BlockOut,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
)
async def create_block(
    body: BlockCreate, session: SessionDep, state: StateDep, actor: Creator
) -> Response:
    """Add an entry: an email, a domain (with its subdomains), or an IP address or block."""
    created = await blocklist_service.create(session, state, body, actor)
    return json_data(block_json(created), 201)


@router.delete("/blocklist/{id}", status_code=204, responses=problem_responses(401, 403, 404, 503))
async def delete_block(
    entry_id: SnowflakeId, session: SessionDep, state: StateDep, _: Deleter
) -> Response:
    """Remove an entry for good (the list is configuration, not data)."""
    await blocklist_service.delete(session, state, entry_id)
    return Response(status_code=204)
