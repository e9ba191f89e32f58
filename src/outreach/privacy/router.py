"""Privacy routes (API.md section 14): a data subject's export and erasure."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import problem_responses
from outreach.core.schemas import Email, json_data
from outreach.http.deps import SessionDep, require
from outreach.http.routing import Router
from outreach.privacy import service
from outreach.privacy.schemas import Erased, EraseIn, Subject
from outreach.state import StateDep

router = Router(tags=["privacy"])

Reader = Annotated[AuthPrincipal, require("privacy", "read")]
Eraser = Annotated[AuthPrincipal, require("privacy", "erase")]


@router.get(
    "/privacy/subject", response_model=Subject, responses=problem_responses(401, 403, 422, 503)
)
async def get_subject(
    email: Annotated[Email, Query(description="The data subject's address")],
    session: SessionDep,
    _: Reader,
) -> Response:
    """Everything held about an address: its inquiries (deleted ones too), their comments and
    history, and its subscribers with their consents. Tokens are not stored, so not shown."""
    return json_data(await service.subject(session, email))


@router.post(
    "/privacy/erase",
    response_model=Erased,
    responses=problem_responses(400, 401, 403, 413, 415, 422, 503),
)
async def erase(body: EraseIn, session: SessionDep, state: StateDep, actor: Eraser) -> Response:
    """Irreversibly erase an address's personal data (API.md section 14); the counts of rows
    erased. Counts and statistics stay. Erasing an address held nowhere answers zeros."""
    return json_data(await service.erase(session, state, body.email, actor.sub))
