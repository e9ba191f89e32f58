"""The response-time statistics (API.md section 11): counts and percentiles of first response
and resolution over the live, non-spam inquiries created in the range, on PostgreSQL and
SQLite, against percentile_cont computed here."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from outreach.core.text import search_key
from outreach.inquiries.models import Inquiry
from tests.support import BASE, Api

INQ = f"{BASE}/statistics/inquiries"


def percentile_cont(values: list[float], rank: float) -> float:
    ordered = sorted(values)
    position = rank * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


async def test_percentiles_over_the_range_without_spam_or_deleted(api: Api) -> None:
    # A year no other test uses, so the range holds only these rows.
    year = 2033 + random.randrange(0, 60)
    start = datetime(year, 3, 1, tzinfo=UTC)
    marker = f"rt-{uuid.uuid4().hex[:8]}"
    rng = random.Random(year)
    first: list[float] = []
    resolution: list[float] = []
    async with api.state.sessionmaker() as session:

        def add(offset: timedelta, **columns: object) -> None:
            created = start + offset
            session.add(
                Inquiry(
                    id=api.state.ids.next_id(),
                    name=marker,
                    email=f"{marker}@example.com",
                    message="times",
                    search_text=search_key(marker),
                    created_at=created,
                    updated_at=created,
                    **columns,
                )
            )

        for n in range(41):
            created_offset = timedelta(hours=n * 5)
            responded = rng.randint(30, 200_000)
            values: dict[str, object] = {
                "status": "IN_PROGRESS",
                "first_responded_at": start + created_offset + timedelta(seconds=responded),
            }
            first.append(float(responded))
            if n % 3 == 0:
                resolved = responded + rng.randint(60, 400_000)
                values |= {
                    "status": "RESOLVED",
                    "resolved_at": start + created_offset + timedelta(seconds=resolved),
                }
                resolution.append(float(resolved))
            add(created_offset, **values)
        late = start + timedelta(days=400)
        # Not counted: spam, deleted, still unanswered, created outside the range.
        add(timedelta(hours=1), status="CANCELLED", spam_reason="staff", first_responded_at=late)
        add(timedelta(hours=2), status="IN_PROGRESS", first_responded_at=late, deleted_at=late)
        add(timedelta(hours=3), status="SENT")
        add(timedelta(days=40), status="RESOLVED", first_responded_at=late, resolved_at=late)
        await session.commit()

    params = {"from": f"{year}-03-01", "to": f"{year}-03-31", "tz": "UTC"}
    body = (await api.client.get(INQ, params=params, headers=api.owner)).json()
    assert body["firstResponse"]["count"] == 41
    assert body["resolution"]["count"] == len(resolution)
    for key, rank in (("p50Seconds", 0.5), ("p90Seconds", 0.9)):
        assert abs(body["firstResponse"][key] - percentile_cont(first, rank)) < 0.01
        assert abs(body["resolution"][key] - percentile_cont(resolution, rank)) < 0.01

    empty = (
        await api.client.get(
            INQ, params={"from": f"{year}-06-01", "to": f"{year}-06-30"}, headers=api.owner
        )
    ).json()
    assert empty["firstResponse"] == {"count": 0, "p50Seconds": None, "p90Seconds": None}
    assert empty["resolution"] == {"count": 0, "p50Seconds": None, "p90Seconds": None}
