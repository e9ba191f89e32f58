"""What services need from the running process, as one dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from outreach.auth.permissions import Authorizer
from outreach.config import Settings
from outreach.realtime.events import Events
from outreach.db.fast import FastDB
from outreach.ids.snowflake import SnowflakeGenerator
from outreach.ids.leases import LeasedIds
from outreach.core.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    fastdb: FastDB
    ids: SnowflakeGenerator | LeasedIds
    events: Events
    metrics: Metrics
    authorizer: Authorizer


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
