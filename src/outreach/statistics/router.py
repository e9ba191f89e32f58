"""Statistics routes for the staff portal's dashboard."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Response

from outreach.auth.principal import AuthPrincipal
from outreach.core.errors import problem_responses
from outreach.core.schemas import json_response
from outreach.db.base import utcnow
from outreach.http.deps import SessionDep, require
from outreach.http.routing import Router
from outreach.state import StateDep
from outreach.statistics.schemas import InquiryStatistics, Interval, SubscriberStatistics
from outreach.statistics.service import Window, window
from outreach.statistics.service import statistics as statistics_service

router = Router(tags=["statistics"])
Reader = Annotated[AuthPrincipal, require("statistics", "read")]
ERRORS = problem_responses(401, 403, 422, 503)


async def _window(
    state: StateDep,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=10,
            description="Local date YYYY-MM-DD",
            json_schema_extra={"format": "date"},
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(
            max_length=10,
            description="Local date YYYY-MM-DD, inclusive",
            json_schema_extra={"format": "date"},
        ),
    ] = None,
    interval: Annotated[Interval, Query()] = "day",
    tz: Annotated[
        str | None, Query(max_length=64, description="IANA zone; default APP_TIMEZONE")
    ] = None,
) -> Window:
    return window(from_, to, interval, tz or state.settings.app_timezone, now=utcnow())


WindowDep = Annotated[Window, Depends(_window)]


@router.get("/statistics/inquiries", response_model=InquiryStatistics, responses=ERRORS)
async def inquiry_statistics(session: SessionDep, _: Reader, win: WindowDep) -> Response:
    """Live inquiries created per day, ISO week or month, and by status."""
    return json_response(await statistics_service.inquiries(session, win))


@router.get("/statistics/subscribers", response_model=SubscriberStatistics, responses=ERRORS)
async def subscriber_statistics(session: SessionDep, _: Reader, win: WindowDep) -> Response:
    """Today's active and unsubscribed totals, and (un)subscriptions per bucket."""
    return json_response(await statistics_service.subscribers(session, win))
