"""Realtime events, sent after commit without holding up the response (best effort)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
import structlog

from outreach.auth.permissions import Authorizer
from outreach.core.logging import info_line
from outreach.realtime.server import Realtime

log = structlog.get_logger("outreach.events")

# Which permission lets a role see each event (API.md section 6): rooms come from the policy.
EVENT_RESOURCE = {
    "inquiry.sent": "inquiries",
    "inquiry.updated": "inquiries",
    "inquiry.commented": "inquiries",
    "subscriber.subscribed": "subscribers",
    "subscriber.unsubscribed": "subscribers",
}


class Events:
    def __init__(self, realtime: Realtime, authorizer: Authorizer) -> None:
        self._realtime = realtime
        self._authorizer = authorizer
        self._tasks: set[asyncio.Task[None]] = set()

    def rooms(self, event: str) -> list[str]:
        resource = EVENT_RESOURCE[event]
        return [f"role:{role}" for role in self._authorizer.roles_that_may(resource, "read")]

    def publish(
        self,
        event: str,
        payload: Mapping[str, Any],
        *,
        rooms: list[str] | None = None,
        **fields: Any,
    ) -> None:
        """Schedule the event; the request that caused it has already committed. `rooms`:
        these instead of the readers' role rooms (`inquiry.assigned` goes to `user:<sub>`)."""
        task = asyncio.create_task(self._send(event, payload, rooms, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self,
        event: str,
        payload: Mapping[str, Any],
        to: list[str] | None,
        fields: dict[str, Any],
    ) -> None:
        rooms = to if to is not None else self.rooms(event)
        sent = await self._realtime.emit(event, payload, rooms, **fields)
        if sent and event == "inquiry.sent":
            inquiry_id = fields.get("inquiryId")
            rooms_json = orjson.dumps(rooms).decode()
            # The same line structlog writes, without its processor chain (~5 % of a submit).
            info_line(
                "outreach.events",
                f"Inquiry SENT | inquiryId: {inquiry_id} | rooms: {rooms_json}",
                {"inquiryId": inquiry_id, "rooms": rooms_json},
            )

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for events still being sent (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
