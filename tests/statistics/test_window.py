"""Statistics query rules: ranges, intervals, time zones, defaults, permissions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from outreach.core.text import search_key
from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import new_token
from tests.support import BASE, Api

INQ = f"{BASE}/statistics/inquiries"
SUB = f"{BASE}/statistics/subscribers"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"from": "2031-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2031-03-05", "to": "2031-03-01"}, "from"),
        ({"interval": "year"}, "interval"),
        ({"from": "2030-01-01", "to": "2031-01-02"}, "to"),  # 367 days
    ],
)
async def test_bad_queries_are_422_naming_the_parameter(
    pg_api: Api, params: dict[str, str], field: str
) -> None:
    for path in (INQ, SUB):
        response = await pg_api.client.get(path, params=params, headers=pg_api.owner)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]


async def test_366_daily_buckets_are_allowed(pg_api: Api) -> None:
    response = await pg_api.client.get(
        INQ, params={"from": "2032-01-01", "to": "2032-12-31"}, headers=pg_api.owner
    )
    assert response.status_code == 200
    assert len(response.json()["series"]) == 366


async def test_default_range_is_the_30_days_ending_today_in_tz(api: Api) -> None:
    tz = "Pacific/Kiritimati"  # UTC+14: "today" there is often tomorrow in UTC
    response = await api.client.get(INQ, params={"tz": tz}, headers=api.owner)
    body = response.json()
    today = datetime.now(UTC).astimezone(ZoneInfo(tz)).date()
    assert body["range"] == {
        "from": (today - timedelta(days=29)).isoformat(),
        "to": today.isoformat(),
        "interval": "day",
        "tz": tz,
    }
    assert len(body["series"]) == 30
    assert sum(item["count"] for item in body["series"]) == body["total"]
    default_tz = await api.client.get(INQ, headers=api.owner)
    assert default_tz.json()["range"]["tz"] == "UTC"  # APP_TIMEZONE


@pytest.mark.parametrize(
    ("interval", "first", "buckets"),
    [
        ("week", "2032-03-03", ["2032-03-01", "2032-03-08", "2032-03-15"]),
        ("month", "2032-01-31", ["2032-01-01", "2032-02-01", "2032-03-01"]),
    ],
)
async def test_week_and_month_buckets(
    api: Api, interval: str, first: str, buckets: list[str]
) -> None:
    last = {"week": "2032-03-15", "month": "2032-03-02"}[interval]
    response = await api.client.get(
        INQ, params={"from": first, "to": last, "interval": interval}, headers=api.owner
    )
    assert response.status_code == 200
    assert [b["bucket"] for b in response.json()["series"]] == buckets
    for bucket in buckets:  # Mondays / the 1st
        day = date.fromisoformat(bucket)
        assert (day.weekday() == 0) if interval == "week" else (day.day == 1)


async def test_subscriber_statistics_shape(api: Api) -> None:
    response = await api.client.get(
        SUB, params={"from": "2032-01-01", "to": "2032-01-03"}, headers=api.owner
    )
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"range", "active", "unsubscribed", "series"}
    assert [set(item) for item in body["series"]] == [{"bucket", "subscribed", "unsubscribed"}] * 3


async def test_permissions(pg_api: Api) -> None:
    for path in (INQ, SUB):
        assert (await pg_api.client.get(path)).status_code == 401
        assert (await pg_api.client.get(path, headers=pg_api.auth("CASHIER"))).status_code == 403
        assert (await pg_api.client.get(path, headers=pg_api.auth("EMPLOYEE"))).status_code == 200


async def test_subscriber_series_and_totals(api: Api) -> None:
    year = 2040 + datetime.now(UTC).microsecond % 40
    before = (await api.client.get(SUB, headers=api.owner)).json()
    day = datetime(year, 5, 1, 12, tzinfo=UTC)
    async with api.app.state.sessionmaker() as session:
        for i, (subscribed, left, deleted) in enumerate(
            [(day, None, False), (day, day + timedelta(days=1), False), (day, None, True)]
        ):
            selector, token = new_token()
            session.add(
                Subscriber(
                    id=api.app.state.ids.next_id(),
                    email=f"stats-{year}-{i}-{selector.lower()}@example.com",
                    status="UNSUBSCRIBED" if left else "ACTIVE",
                    subscribed_at=subscribed,
                    unsubscribed_at=left,
                    unsubscribe_selector=selector,
                    unsubscribe_token=token,
                    search_text=search_key("stats"),
                    created_at=subscribed,
                    updated_at=subscribed,
                    deleted_at=day if deleted else None,
                )
            )
        await session.commit()
    body = (
        await api.client.get(
            SUB, params={"from": f"{year}-05-01", "to": f"{year}-05-03"}, headers=api.owner
        )
    ).json()
    assert body["series"] == [
        {"bucket": f"{year}-05-01", "subscribed": 2, "unsubscribed": 0},
        {"bucket": f"{year}-05-02", "subscribed": 0, "unsubscribed": 1},
        {"bucket": f"{year}-05-03", "subscribed": 0, "unsubscribed": 0},
    ]
    assert body["active"] == before["active"] + 1  # the deleted one is not counted
    assert body["unsubscribed"] == before["unsubscribed"] + 1
