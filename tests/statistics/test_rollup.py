"""Statistics equal what a person would count by hand, after every kind of write.

On PostgreSQL the inquiry statistics read the trigger-kept 15-minute rollup; on SQLite they
group the rows. The expected figures are computed here from the rows with zoneinfo.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, text, update

from outreach.core.text import search_key
from outreach.inquiries.models import Inquiry
from tests.support import BASE, Api

STATS = f"{BASE}/statistics/inquiries"
# Far from "now" and from other tests' rows: a range of our own.
YEAR = 2032 + uuid.uuid4().int % 50


async def add(api: Api, moments: list[tuple[datetime, str]], marker: str) -> list[int]:
    ids = []
    async with api.app.state.sessionmaker() as session:
        for moment, status in moments:
            inquiry_id = api.app.state.ids.next_id()
            ids.append(inquiry_id)
            session.add(
                Inquiry(
                    id=inquiry_id,
                    name=marker,
                    email=f"{marker}@example.com",
                    message="m",
                    status=status,
                    search_text=search_key(marker),
                    created_at=moment,
                    updated_at=moment,
                )
            )
        await session.commit()
    return ids


def expected(
    rows: list[tuple[datetime, str]], tz: str, first: date, last: date
) -> tuple[Counter[date], Counter[str]]:
    zone = ZoneInfo(tz)
    days: Counter[date] = Counter()
    statuses: Counter[str] = Counter()
    for moment, status in rows:
        local = moment.astimezone(zone).date()
        if first <= local <= last:
            days[local] += 1
            statuses[status] += 1
    return days, statuses


async def stats(api: Api, first: date, last: date, tz: str) -> dict[str, object]:
    response = await api.client.get(
        STATS,
        params={"from": first.isoformat(), "to": last.isoformat(), "tz": tz},
        headers=api.owner,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_counts_per_local_day_follow_writes(api: Api) -> None:
    marker = f"stats-{uuid.uuid4().hex[:10]}"
    tz = "Asia/Ho_Chi_Minh"
    base = datetime(YEAR, 3, 1, tzinfo=UTC)
    rows = [
        (base + timedelta(hours=16, minutes=59, seconds=59), "SENT"),  # local Mar 1, 23:59:59
        (base + timedelta(hours=17), "SENT"),  # local Mar 2, 00:00
        (base + timedelta(days=1, hours=3, minutes=7), "RESOLVED"),
        (base + timedelta(days=2, hours=23, minutes=59), "CANCELLED"),
        (base + timedelta(days=5), "IN_PROGRESS"),
    ]
    ids = await add(api, rows, marker)
    first, last = date(YEAR, 3, 1), date(YEAR, 3, 4)

    async def check(current: list[tuple[datetime, str]]) -> None:
        body = await stats(api, first, last, tz)
        days, statuses = expected(current, tz, first, last)
        series = body["series"]
        assert isinstance(series, list)
        assert [item["bucket"] for item in series] == [
            (first + timedelta(days=i)).isoformat() for i in range(4)
        ]
        assert {date.fromisoformat(i["bucket"]): i["count"] for i in series if i["count"]} == dict(
            days
        )
        assert body["total"] == sum(days.values())
        by_status = body["byStatus"]
        assert isinstance(by_status, dict)
        assert {k: v for k, v in by_status.items() if v} == dict(statuses)
        assert set(by_status) == {"SENT", "IN_PROGRESS", "RESOLVED", "CANCELLED"}

    await check(rows)
    # A status change moves the count between statuses; a soft delete removes it.
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(Inquiry).where(Inquiry.id == ids[0]).values(status="RESOLVED"))
        await session.execute(
            update(Inquiry).where(Inquiry.id == ids[2]).values(deleted_at=datetime.now(UTC))
        )
        await session.commit()
    current = [(rows[0][0], "RESOLVED"), rows[1], rows[3], rows[4]]
    await check(current)
    # Restored: counted again.
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(Inquiry).where(Inquiry.id == ids[2]).values(deleted_at=None))
        await session.commit()
    await check([*current, rows[2]])


async def test_half_hour_and_dst_zones(api: Api) -> None:
    marker = f"stats-{uuid.uuid4().hex[:10]}"
    # Around New York's DST start and Lord Howe's 30-minute shift, and India's +05:30.
    moments = [
        datetime(YEAR, 3, 9, 4, 59, tzinfo=UTC),
        datetime(YEAR, 3, 9, 5, 0, tzinfo=UTC),
        datetime(YEAR, 3, 10, 3, 59, tzinfo=UTC),
        datetime(YEAR, 3, 10, 4, 1, tzinfo=UTC),
        datetime(YEAR, 4, 4, 13, 29, tzinfo=UTC),
        datetime(YEAR, 4, 4, 13, 31, tzinfo=UTC),
        datetime(YEAR, 3, 9, 18, 29, tzinfo=UTC),
        datetime(YEAR, 3, 9, 18, 31, tzinfo=UTC),
    ]
    rows = [(m, "SENT") for m in moments]
    await add(api, rows, marker)
    for tz, first, last in (
        ("America/New_York", date(YEAR, 3, 8), date(YEAR, 3, 11)),
        ("Australia/Lord_Howe", date(YEAR, 4, 3), date(YEAR, 4, 6)),
        ("Asia/Kolkata", date(YEAR, 3, 9), date(YEAR, 3, 10)),
    ):
        body = await stats(api, first, last, tz)
        days, _ = expected(rows, tz, first, last)
        series = body["series"]
        assert isinstance(series, list)
        got = {date.fromisoformat(i["bucket"]): i["count"] for i in series if i["count"]}
        assert got == dict(days), tz


async def test_the_rollup_equals_the_rows(pg_api: Api) -> None:
    """The trigger-kept buckets hold exactly the live rows, whatever the tests did."""
    async with pg_api.app.state.sessionmaker() as session:
        mismatches = (
            await session.execute(
                text(
                    """
                    SELECT bucket, status FROM (
                        SELECT inquiry_bucket(created_at) AS bucket, status, count(*) AS n
                        FROM inquiries WHERE deleted_at IS NULL GROUP BY 1, 2
                    ) rows FULL JOIN (
                        SELECT bucket, status, sum(n) AS n FROM inquiry_rollup
                        GROUP BY 1, 2 HAVING sum(n) <> 0
                    ) rollup USING (bucket, status)
                    WHERE rows.n IS DISTINCT FROM rollup.n
                    """
                )
            )
        ).all()
        live = await session.scalar(select(Inquiry.id).where(Inquiry.deleted_at.is_(None)).limit(1))
    assert live is not None
    assert mismatches == []
