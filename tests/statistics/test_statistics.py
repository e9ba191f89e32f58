"""GET /statistics/inquiries and /statistics/subscribers against the contract (API.md 5).

Every row here is inserted through the ORM with a created_at in 2031 (or in the 1930s for the
historical-offset cases), a span no other test writes to, and each test uses its own days.
Expected buckets are written down by hand and checked against zoneinfo as well.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, update

from outreach.core.text import search_key
from outreach.inquiries.models import Inquiry
from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import new_selector
from tests.support import BASE, Api

INQ = f"{BASE}/statistics/inquiries"
SUB = f"{BASE}/statistics/subscribers"
STATUSES = {"SENT", "IN_PROGRESS", "RESOLVED", "CANCELLED"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def add_inquiries(
    api: Api, rows: list[tuple[datetime, str]], *, deleted: bool = False
) -> list[int]:
    marker = f"stat-{uuid.uuid4().hex[:10]}"
    ids = []
    async with api.state.sessionmaker() as session:
        for moment, status in rows:
            inquiry_id = api.state.ids.next_id()
            ids.append(inquiry_id)
            session.add(
                Inquiry(
                    id=inquiry_id,
                    name=marker,
                    email=f"{marker}@example.com",
                    message="statistics",
                    status=status,
                    search_text=search_key(marker),
                    created_at=moment,
                    updated_at=moment,
                    deleted_at=moment + timedelta(minutes=1) if deleted else None,
                )
            )
        await session.commit()
    return ids


async def add_subscriber(
    api: Api,
    subscribed: datetime,
    left: datetime | None = None,
    *,
    deleted: bool = False,
    pending: bool = False,
) -> None:
    async with api.state.sessionmaker() as session:
        session.add(
            Subscriber(
                id=api.state.ids.next_id(),
                email=f"stat-{uuid.uuid4().hex[:12]}@example.com",
                status="PENDING" if pending else "UNSUBSCRIBED" if left else "ACTIVE",
                subscribed_at=subscribed,
                unsubscribed_at=left,
                unsubscribe_selector=new_selector(),
                search_text=search_key("stat"),
                created_at=subscribed,
                updated_at=left or subscribed,
                deleted_at=subscribed + timedelta(hours=1) if deleted else None,
            )
        )
        await session.commit()


async def get(api: Api, path: str, **params: str) -> dict[str, Any]:
    response = await api.client.get(path, params=params, headers=api.owner)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def counts(body: dict[str, Any]) -> dict[str, int]:
    return {item["bucket"]: item["count"] for item in body["series"]}


def days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def assert_consistent(body: dict[str, Any]) -> None:
    """The invariants of every inquiry statistics answer."""
    assert set(body) == {"range", "total", "byStatus", "series", "firstResponse", "resolution"}
    for times in (body["firstResponse"], body["resolution"]):
        assert set(times) == {"count", "p50Seconds", "p90Seconds"}
        assert (times["p50Seconds"] is None) == (times["count"] == 0)
    assert set(body["byStatus"]) == STATUSES
    assert sum(body["byStatus"].values()) == body["total"]
    assert sum(item["count"] for item in body["series"]) == body["total"]
    assert all(set(item) == {"bucket", "count"} for item in body["series"])


# --- inquiries, day interval -----------------------------------------------------------


async def test_local_days_dense_series_statuses_and_soft_delete(api: Api) -> None:
    tz = "Asia/Ho_Chi_Minh"  # UTC+7
    await add_inquiries(
        api,
        [
            (utc("2031-02-28T16:59:59"), "SENT"),  # local Feb 28 23:59:59: before the range
            (utc("2031-03-01T16:59:59"), "SENT"),  # local Mar 1 23:59:59
            (utc("2031-03-01T17:00:00"), "IN_PROGRESS"),  # local Mar 2 00:00
            (utc("2031-03-02T05:00:00"), "RESOLVED"),  # local Mar 2 12:00
            (utc("2031-03-04T16:59:59.999"), "SENT"),  # local Mar 4 23:59:59.999
            (utc("2031-03-04T17:00:00"), "SENT"),  # local Mar 5 00:00: after the range
        ],
    )
    await add_inquiries(api, [(utc("2031-03-03T10:00:00"), "CANCELLED")], deleted=True)

    body = await get(api, INQ, **{"from": "2031-03-01", "to": "2031-03-04", "tz": tz})
    assert body["range"] == {"from": "2031-03-01", "to": "2031-03-04", "interval": "day", "tz": tz}
    assert body["series"] == [
        {"bucket": "2031-03-01", "count": 1},
        {"bucket": "2031-03-02", "count": 2},
        {"bucket": "2031-03-03", "count": 0},  # dense: the deleted row is not counted
        {"bucket": "2031-03-04", "count": 1},
    ]
    assert body["total"] == 4
    assert body["byStatus"] == {"SENT": 2, "IN_PROGRESS": 1, "RESOLVED": 1, "CANCELLED": 0}
    assert_consistent(body)

    # The same rows seen from UTC: both rows around 17:00Z fall on March 1.
    body = await get(api, INQ, **{"from": "2031-03-01", "to": "2031-03-04", "tz": "UTC"})
    assert counts(body) == {"2031-03-01": 2, "2031-03-02": 1, "2031-03-03": 0, "2031-03-04": 2}
    assert body["byStatus"] == {"SENT": 3, "IN_PROGRESS": 1, "RESOLVED": 1, "CANCELLED": 0}
    assert_consistent(body)


async def test_a_status_change_and_a_soft_delete_move_the_counts(api: Api) -> None:
    ids = await add_inquiries(
        api, [(utc("2031-01-20T12:00:00"), "SENT"), (utc("2031-01-21T12:00:00"), "SENT")]
    )
    params = {"from": "2031-01-20", "to": "2031-01-21"}
    body = await get(api, INQ, **params)
    assert body["byStatus"]["SENT"] == 2
    async with api.state.sessionmaker() as session:
        await session.execute(update(Inquiry).where(Inquiry.id == ids[0]).values(status="RESOLVED"))
        await session.execute(
            update(Inquiry).where(Inquiry.id == ids[1]).values(deleted_at=utc("2031-01-22T00:00"))
        )
        await session.commit()
    body = await get(api, INQ, **params)
    assert body["series"] == [
        {"bucket": "2031-01-20", "count": 1},
        {"bucket": "2031-01-21", "count": 0},
    ]
    assert body["byStatus"] == {"SENT": 0, "IN_PROGRESS": 0, "RESOLVED": 1, "CANCELLED": 0}


# --- time zones with DST and odd offsets -----------------------------------------------

# (tz, from, to, [(utc moment, its local date by hand, or None when outside the range)])
DST_CASES = {
    "new-york-dst-starts": (
        "America/New_York",  # 2031-03-09 07:00Z: 02:00 EST -> 03:00 EDT
        "2031-03-07",
        "2031-03-10",
        [
            ("2031-03-07T04:59:59", None),  # Mar 6 23:59:59 EST
            ("2031-03-07T05:00:00", "2031-03-07"),
            ("2031-03-08T04:59:59", "2031-03-07"),
            ("2031-03-08T05:00:00", "2031-03-08"),
            ("2031-03-09T04:59:59", "2031-03-08"),
            ("2031-03-09T05:00:00", "2031-03-09"),  # midnight, still EST
            ("2031-03-09T06:59:59", "2031-03-09"),  # 01:59:59 EST
            ("2031-03-09T07:00:00", "2031-03-09"),  # 03:00 EDT
            ("2031-03-10T03:59:59", "2031-03-09"),  # 23:59:59 EDT: a 23-hour day
            ("2031-03-10T04:00:00", "2031-03-10"),  # midnight EDT
            ("2031-03-11T03:59:59", "2031-03-10"),
            ("2031-03-11T04:00:00", None),  # Mar 11
        ],
    ),
    "new-york-dst-ends": (
        "America/New_York",  # 2031-11-02 06:00Z: 02:00 EDT -> 01:00 EST
        "2031-11-01",
        "2031-11-03",
        [
            ("2031-11-01T03:59:59", None),  # Oct 31 23:59:59 EDT
            ("2031-11-01T04:00:00", "2031-11-01"),
            ("2031-11-02T03:59:59", "2031-11-01"),
            ("2031-11-02T04:00:00", "2031-11-02"),  # midnight EDT
            ("2031-11-02T05:30:00", "2031-11-02"),  # 01:30 EDT
            ("2031-11-02T06:30:00", "2031-11-02"),  # 01:30 EST, again
            ("2031-11-03T04:59:59", "2031-11-02"),  # 23:59:59 EST: a 25-hour day
            ("2031-11-03T05:00:00", "2031-11-03"),
            ("2031-11-04T04:59:59", "2031-11-03"),
            ("2031-11-04T05:00:00", None),
        ],
    ),
    "lord-howe-half-hour-dst-ends": (
        "Australia/Lord_Howe",  # 2031-04-05 15:00Z: 02:00 +11 -> 01:30 +10:30
        "2031-04-05",
        "2031-04-07",
        [
            ("2031-04-04T12:59:59", None),  # Apr 4 23:59:59 +11
            ("2031-04-04T13:00:00", "2031-04-05"),
            ("2031-04-05T12:59:59", "2031-04-05"),
            ("2031-04-05T13:00:00", "2031-04-06"),  # midnight +11
            ("2031-04-05T14:45:00", "2031-04-06"),  # 01:45 +11
            ("2031-04-05T15:15:00", "2031-04-06"),  # 01:45 +10:30, again
            ("2031-04-06T13:29:59", "2031-04-06"),  # 23:59:59 +10:30: a 24.5-hour day
            ("2031-04-06T13:30:00", "2031-04-07"),
            ("2031-04-07T13:29:59", "2031-04-07"),
            ("2031-04-07T13:30:00", None),
        ],
    ),
}


@pytest.mark.parametrize("case", DST_CASES)
async def test_days_around_dst_transitions(api: Api, case: str) -> None:
    tz, first, last, rows = DST_CASES[case]
    zone = ZoneInfo(tz)
    want: Counter[str] = Counter()
    for moment, local in rows:
        actual = utc(moment).astimezone(zone).date().isoformat()
        if local is None:
            assert not first <= actual <= last, moment
        else:
            assert actual == local, moment  # the hand-written expectation is right
            want[local] += 1
    await add_inquiries(api, [(utc(moment), "SENT") for moment, _ in rows])
    body = await get(api, INQ, **{"from": first, "to": last, "tz": tz})
    assert counts(body) == {day: want[day] for day in days(first, last)}
    assert list(counts(body)) == days(first, last)
    assert body["byStatus"]["SENT"] == body["total"] == sum(want.values())
    assert_consistent(body)


async def test_months_in_a_zone_whose_offset_was_not_a_quarter_hour(api: Api) -> None:
    """Singapore was UTC+7:20 from 1933 to 1941: a range with edges at +7:00 and +7:30.

    A 15-minute UTC bucket then straddles local midnight: 16:40Z is already March 1.
    """
    tz = "Asia/Singapore"
    rows = [
        ("1935-02-28T16:35:00", "1935-02-01"),  # 23:55 +07:20
        ("1935-02-28T16:40:00", "1935-03-01"),  # 00:00 +07:20
        ("1935-02-28T16:44:59", "1935-03-01"),
        ("1932-11-30T17:00:00", "1932-12-01"),  # the first instant of the range, +07:00
        ("1941-12-31T16:29:59", "1941-12-01"),  # the last second of the range, +07:30
        ("1941-12-31T16:30:00", None),
    ]
    zone = ZoneInfo(tz)
    for moment, bucket in rows:
        local = utc(moment).astimezone(zone).date()
        assert (local.replace(day=1).isoformat() if local.year < 1942 else None) == bucket
    await add_inquiries(api, [(utc(moment), "SENT") for moment, _ in rows])
    body = await get(
        api, INQ, **{"from": "1932-12-01", "to": "1941-12-31", "interval": "month", "tz": tz}
    )
    assert len(body["series"]) == 109
    got = {bucket: n for bucket, n in counts(body).items() if n}
    assert got == {"1932-12-01": 1, "1935-02-01": 1, "1935-03-01": 2, "1941-12-01": 1}
    assert_consistent(body)


async def test_local_mean_time_offsets_in_seconds(api: Api) -> None:
    """Saigon was UTC+7:06:30 until 1906: range edges that are not on any quarter hour."""
    tz = "Asia/Ho_Chi_Minh"
    await add_inquiries(
        api,
        [
            (utc("1905-03-01T16:53:29"), "SENT"),  # Mar 1 23:59:59 local
            (utc("1905-03-01T16:53:30"), "SENT"),  # Mar 2 00:00 local
            (utc("1905-03-02T16:53:30"), "SENT"),  # Mar 3: outside
        ],
    )
    await add_inquiries(api, [(utc("1905-03-01T12:00:00"), "SENT")], deleted=True)
    body = await get(api, INQ, **{"from": "1905-03-01", "to": "1905-03-02", "tz": tz})
    assert counts(body) == {"1905-03-01": 1, "1905-03-02": 1}
    assert_consistent(body)


# --- week and month intervals ----------------------------------------------------------


async def test_week_buckets_are_iso_mondays(api: Api) -> None:
    tz = "Asia/Ho_Chi_Minh"
    await add_inquiries(
        api,
        [
            (utc("2031-06-03T12:00:00"), "SENT"),  # Tue Jun 3 local: before `from`
            (utc("2031-06-03T17:00:00"), "SENT"),  # Wed Jun 4 00:00 local
            (utc("2031-06-08T16:59:59"), "SENT"),  # Sun Jun 8 23:59:59 local -> Mon Jun 2
            (utc("2031-06-08T17:00:00"), "RESOLVED"),  # Mon Jun 9 00:00 local
            (utc("2031-06-22T16:59:59"), "SENT"),  # Sun Jun 22 23:59:59 -> Mon Jun 16
            (utc("2031-06-22T17:00:00"), "SENT"),  # Mon Jun 23: after `to`
        ],
    )
    body = await get(
        api, INQ, **{"from": "2031-06-04", "to": "2031-06-22", "interval": "week", "tz": tz}
    )
    assert body["range"] == {"from": "2031-06-04", "to": "2031-06-22", "interval": "week", "tz": tz}
    assert body["series"] == [
        {"bucket": "2031-06-02", "count": 2},
        {"bucket": "2031-06-09", "count": 1},
        {"bucket": "2031-06-16", "count": 1},
    ]
    assert all(date.fromisoformat(b["bucket"]).weekday() == 0 for b in body["series"])
    assert body["byStatus"] == {"SENT": 3, "IN_PROGRESS": 0, "RESOLVED": 1, "CANCELLED": 0}
    assert_consistent(body)


async def test_month_buckets_are_the_first(api: Api) -> None:
    tz = "America/New_York"
    await add_inquiries(
        api,
        [
            (utc("2031-07-15T03:59:59"), "SENT"),  # Jul 14 local: before `from`
            (utc("2031-07-15T04:00:00"), "SENT"),  # Jul 15 00:00 EDT
            (utc("2031-08-01T03:59:59"), "SENT"),  # Jul 31 23:59:59 EDT
            (utc("2031-08-01T04:00:00"), "SENT"),  # Aug 1 00:00 EDT
            (utc("2031-09-01T04:00:00"), "SENT"),  # Sep 1 00:00 EDT
            (utc("2031-09-11T04:00:00"), "SENT"),  # Sep 11: after `to`
        ],
    )
    body = await get(
        api, INQ, **{"from": "2031-07-15", "to": "2031-09-10", "interval": "month", "tz": tz}
    )
    assert body["series"] == [
        {"bucket": "2031-07-01", "count": 2},
        {"bucket": "2031-08-01", "count": 1},
        {"bucket": "2031-09-01", "count": 1},
    ]
    assert_consistent(body)
    across_new_year = await get(
        api, INQ, **{"from": "2031-11-30", "to": "2032-01-01", "interval": "month"}
    )
    assert [b["bucket"] for b in across_new_year["series"]] == [
        "2031-11-01",
        "2031-12-01",
        "2032-01-01",
    ]


async def test_every_month_edge_of_a_year_with_summer_time(api: Api) -> None:
    """1999 in New York: EST at both ends of the range, EDT from April 4 to October 31."""
    tz = "America/New_York"
    zone = ZoneInfo(tz)
    moments = []
    for month in range(1, 14):  # the first instant of each month and the second before it
        first = datetime(1999 + month // 13, (month - 1) % 12 + 1, 1, tzinfo=zone)
        moments += [(first - timedelta(seconds=1)).astimezone(UTC), first.astimezone(UTC)]
    assert utc("1999-06-01T04:00:00") in moments  # EDT
    assert utc("1999-12-01T05:00:00") in moments  # EST
    await add_inquiries(api, [(m, "SENT") for m in moments])
    body = await get(
        api, INQ, **{"from": "1999-01-01", "to": "1999-12-31", "interval": "month", "tz": tz}
    )
    # Each month holds its first second and its last, nothing leaks into the next.
    assert body["series"] == [
        {"bucket": f"1999-{month:02d}-01", "count": 2} for month in range(1, 13)
    ]
    assert_consistent(body)


# --- defaults --------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "Pacific/Pago_Pago", None])
async def test_default_range_is_the_30_days_ending_today_in_tz(api: Api, tz: str | None) -> None:
    params = {"tz": tz} if tz else {}
    zone = ZoneInfo(tz or "UTC")  # APP_TIMEZONE defaults to UTC
    for _ in range(3):  # a request straddling midnight in tz is asked again
        today = datetime.now(UTC).astimezone(zone).date()
        body = await get(api, INQ, **params)
        if datetime.now(UTC).astimezone(zone).date() == today:
            break
    assert body["range"] == {
        "from": (today - timedelta(days=29)).isoformat(),
        "to": today.isoformat(),
        "interval": "day",
        "tz": tz or "UTC",
    }
    assert [b["bucket"] for b in body["series"]] == days(body["range"]["from"], today.isoformat())
    assert_consistent(body)


async def test_omitted_tz_uses_app_timezone(api: Api) -> None:
    # 23:30Z is already the next day in Ho Chi Minh City: the default tz must be UTC here.
    await add_inquiries(api, [(utc("2031-05-10T23:30:00"), "SENT")])
    params = {"from": "2031-05-10", "to": "2031-05-11"}
    assert counts(await get(api, INQ, **params)) == {"2031-05-10": 1, "2031-05-11": 0}
    ho_chi_minh = await get(api, INQ, **params, tz="Asia/Ho_Chi_Minh")
    assert counts(ho_chi_minh) == {"2031-05-10": 0, "2031-05-11": 1}
    assert api.settings.app_timezone == "UTC"


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": "America"}, "tz"),  # a folder of the zone database, not a zone
        ({"tz": "../../etc/passwd"}, "tz"),
        ({"tz": "Asia/Ho_Chi_Minh\x00"}, "tz"),
        ({"tz": "x" * 65}, "tz"),
        ({"from": "2031-13-01"}, "from"),
        ({"from": "2031-02-29"}, "from"),
        ({"from": "2031-W09-1"}, "from"),  # ISO week date: not YYYY-MM-DD
        ({"from": "2031-03-01T00:00"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"to": "20310301"}, "to"),
        ({"from": "2031-03-05", "to": "2031-03-01"}, "from"),
        ({"interval": "year"}, "interval"),
        ({"from": "2030-01-01", "to": "2031-01-02"}, "to"),  # 367 daily buckets
        ({"from": "2031-01-01", "to": "2038-01-04", "interval": "week"}, "to"),
        ({"from": "2000-01-01", "to": "2030-07-01", "interval": "month"}, "to"),
        ({"from": "9999-12-31", "to": "9999-12-31"}, "to"),
        ({"from": "9999-12-01", "to": "9999-12-31", "interval": "month"}, "to"),
        ({"from": "0001-01-01", "to": "0001-01-01", "tz": "Asia/Tokyo"}, "from"),
        ({"to": "0001-01-05"}, "to"),
    ],
)
async def test_bad_queries_are_422_naming_the_parameter(
    pg_api: Api, params: dict[str, str], field: str
) -> None:
    for path in (INQ, SUB):
        response = await pg_api.client.get(path, params=params, headers=pg_api.owner)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 422
        assert [e["field"] for e in problem["errors"]] == [field], problem


async def test_the_largest_ranges_are_allowed(pg_api: Api) -> None:
    for params, buckets in (
        ({"from": "2031-01-01", "to": "2032-01-01"}, 366),
        ({"from": "2031-01-01", "to": "2038-01-03", "interval": "week"}, 366),
        ({"from": "2000-01-01", "to": "2030-06-30", "interval": "month"}, 366),
    ):
        body = await get(pg_api, INQ, **params)
        assert len(body["series"]) == buckets, params
        assert_consistent(body)
        assert len((await get(pg_api, SUB, **params))["series"]) == buckets


# --- subscribers -----------------------------------------------------------------------


async def test_subscriber_totals_and_series(api: Api) -> None:
    tz = "Asia/Ho_Chi_Minh"
    params = {"from": "2031-08-01", "to": "2031-08-03", "tz": tz}
    before = await get(api, SUB, **params)
    await add_subscriber(api, utc("2031-08-01T16:59:59"))  # Aug 1 local, still active
    await add_subscriber(api, utc("2031-08-01T17:00:00"), utc("2031-08-02T16:59:59"))
    await add_subscriber(api, utc("2031-07-31T12:00:00"), utc("2031-08-02T17:00:00"))
    await add_subscriber(api, utc("2031-08-02T00:00:00"), deleted=True)  # not counted
    await add_subscriber(api, utc("2031-08-01T00:00:00"), utc("2031-08-02T00:00:00"), deleted=True)
    # Double opt-in, not confirmed: counted as pending today, not as a subscription.
    await add_subscriber(api, utc("2031-08-02T03:00:00"), pending=True)
    body = await get(api, SUB, **params)
    assert set(body) == {"range", "active", "unsubscribed", "pending", "series"}
    assert body["range"] == {"from": "2031-08-01", "to": "2031-08-03", "interval": "day", "tz": tz}
    assert body["series"] == [
        {"bucket": "2031-08-01", "subscribed": 1, "unsubscribed": 0},
        {"bucket": "2031-08-02", "subscribed": 1, "unsubscribed": 1},
        {"bucket": "2031-08-03", "subscribed": 0, "unsubscribed": 1},
    ]
    assert before["series"] == [
        {"bucket": day, "subscribed": 0, "unsubscribed": 0}
        for day in days("2031-08-01", "2031-08-03")
    ]
    assert body["active"] - before["active"] == 1
    assert body["unsubscribed"] - before["unsubscribed"] == 2
    assert body["pending"] - before["pending"] == 1
    # Totals are today's, whatever the range.
    elsewhere = await get(api, SUB, **{"from": "2031-01-01", "to": "2031-01-02"})
    assert (elsewhere["active"], elsewhere["unsubscribed"], elsewhere["pending"]) == (
        body["active"],
        body["unsubscribed"],
        body["pending"],
    )

    weekly = await get(api, SUB, **params, interval="week")
    assert weekly["series"] == [{"bucket": "2031-07-28", "subscribed": 2, "unsubscribed": 2}]


# --- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [INQ, SUB])
async def test_permissions(api: Api, path: str) -> None:
    no_token = await api.client.get(path)
    assert no_token.status_code == 401
    assert no_token.headers["content-type"] == "application/problem+json"
    assert (await api.client.get(path, headers=api.auth("CASHIER"))).status_code == 403
    assert (await api.client.get(path, headers=api.auth("EMPLOYEE"))).status_code == 200
    # Validation does not run before authorization: nothing is learnt without a token.
    bad = {"tz": "Mars/Olympus"}
    assert (await api.client.get(path, params=bad)).status_code == 401
    assert (await api.client.get(path, params=bad, headers=api.auth("CASHIER"))).status_code == 403


# --- the work is done by the database --------------------------------------------------


@contextmanager
def statements(api: Api) -> Iterator[list[str]]:
    """The SQL statements run while inside, but for the background tasks': the policy
    reload and (SQLite) the in-process job worker's polls of the `jobs` table."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        sql = str(args[2])
        if "casbin" not in sql and not re.search(r"\bjobs\b", sql):
            seen.append(sql)

    engine = api.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_statistics_are_grouped_in_the_database(api: Api) -> None:
    """One grouped query per series, whatever the number of rows; auth reads nothing."""
    tz = "Australia/Sydney"  # DST starts 2031-10-05: SQLite gets a CASE over two offsets
    params = {"from": "2031-09-20", "to": "2031-10-20", "tz": tz}
    await get(api, INQ, **params)  # warm: token and policy caches
    await get(api, SUB, **params)

    async def measure(path: str) -> list[str]:
        with statements(api) as seen:
            await get(api, path, **params)
        return seen

    inquiries_empty = await measure(INQ)
    subscribers_empty = await measure(SUB)

    start = utc("2031-09-19T14:00:00")  # Sep 20 00:00 local
    moments = [start + timedelta(minutes=97 * i) for i in range(400)]
    await add_inquiries(api, [(m, ("SENT", "RESOLVED")[i % 2]) for i, m in enumerate(moments)])
    for i in range(20):
        await add_subscriber(api, start + timedelta(hours=30 * i), start + timedelta(days=25))

    inquiry_reads = await measure(INQ)
    # Series and byStatus from one grouped query; then the response times, in the database:
    # percentile_cont on PostgreSQL (one query each), on SQLite a count and two reads of the
    # values at the ranks (each). The same statements whatever the number of rows.
    postgres = api.state.engine.dialect.name == "postgresql"
    assert len(inquiry_reads) == (3 if postgres else 7), inquiry_reads
    assert "GROUP BY" in inquiry_reads[0]
    assert inquiry_reads == inquiries_empty

    subscriber_reads = await measure(SUB)
    assert len(subscriber_reads) == 3, subscriber_reads  # subscribed, unsubscribed, totals
    assert all("GROUP BY" in s for s in subscriber_reads)
    assert subscriber_reads == subscribers_empty

    zone = ZoneInfo(tz)
    body = await get(api, INQ, **params)
    assert body["total"] == 400
    assert body["byStatus"] == {"SENT": 200, "IN_PROGRESS": 0, "RESOLVED": 200, "CANCELLED": 0}
    want = Counter(m.astimezone(zone).date().isoformat() for m in moments)
    assert counts(body) == {day: want[day] for day in days("2031-09-20", "2031-10-20")}
    subscribers = (await get(api, SUB, **params))["series"]
    assert sum(b["subscribed"] for b in subscribers) == 20
    assert sum(b["unsubscribed"] for b in subscribers) == 20
