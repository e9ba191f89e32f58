"""Counts per local-date bucket in an IANA time zone, grouped in the database.

PostgreSQL converts with `AT TIME ZONE`, over the trigger-kept 15-minute rollup of live
inquiries (migration 0003) rather than the rows. SQLite knows no time zones, so the UTC
offsets in force over the range are computed here (zoneinfo) and handed to one grouped
query as a CASE over the moments where the offset changes; either way it is one query per
series.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    DateTime,
    String,
    case,
    cast,
    column,
    func,
    literal,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncSession

from outreach.core.errors import ValidationFailed
from outreach.inquiries.models import Inquiry, InquiryStatus
from outreach.statistics.schemas import (
    ByStatus,
    InquiryBucket,
    InquiryStatistics,
    Interval,
    Range,
    SubscriberBucket,
    SubscriberStatistics,
)
from outreach.subscribers.models import Subscriber, SubscriberStatus

MAX_BUCKETS = 366
DEFAULT_DAYS = 30
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class Window:
    first: date
    last: date
    interval: Interval
    tz_name: str
    tz: ZoneInfo
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    buckets: tuple[date, ...]

    def range(self) -> Range:
        return Range(
            from_=self.first.isoformat(),
            to=self.last.isoformat(),
            interval=self.interval,
            tz=self.tz_name,
        )


def bucket_of(day: date, interval: Interval) -> date:
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def _next_bucket(bucket: date, interval: Interval) -> date:
    if interval == "day":
        return bucket + timedelta(days=1)
    if interval == "week":
        return bucket + timedelta(days=7)
    return (bucket.replace(day=28) + timedelta(days=4)).replace(day=1)


def _parse_date(raw: str | None, field: str) -> date | None:
    if raw is None:
        return None
    try:
        # Only YYYY-MM-DD: fromisoformat also takes 20310301 and week dates (2031-W09-1).
        if not _DATE.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            f"{field} must be a date YYYY-MM-DD", errors=[(field, "expected YYYY-MM-DD")]
        ) from None


def window(
    raw_from: str | None, raw_to: str | None, interval: Interval, tz_name: str, *, now: datetime
) -> Window:
    try:
        tz = ZoneInfo(tz_name)
    # OSError: a folder of the zone database ("America") is opened as a file.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationFailed(
            "tz must be an IANA time zone", errors=[("tz", "unknown time zone")]
        ) from None
    first = _parse_date(raw_from, "from")
    last = _parse_date(raw_to, "to")
    field = "to"  # the date an overflow below comes from
    try:
        if last is None:
            if first is None:
                last = now.astimezone(tz).date()
            else:
                field = "from"
                last = first + timedelta(days=DEFAULT_DAYS - 1)
        if first is None:
            first = last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise ValidationFailed("from must not be after to", errors=[("from", "after to")])
        buckets: list[date] = []
        bucket = bucket_of(first, interval)
        while bucket <= last:
            buckets.append(bucket)
            if len(buckets) > MAX_BUCKETS:
                raise ValidationFailed(
                    f"At most {MAX_BUCKETS} buckets", errors=[("to", "range too long for interval")]
                )
            bucket = _next_bucket(bucket, interval)
        field = "from"
        start = _utc_start(first, tz)
        field = "to"
        end = _utc_start(last + timedelta(days=1), tz)
    except OverflowError:
        raise ValidationFailed(
            "The range must lie within years 1..9999 in tz",
            errors=[(field, "out of the supported range")],
        ) from None
    return Window(first, last, interval, tz_name, tz, start, end, tuple(buckets))


def _utc_start(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of the local `day` in `tz`, in UTC."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


Segments = tuple[tuple[datetime, int], ...]


@lru_cache(maxsize=64)
def offset_segments(tz: ZoneInfo, start: datetime, end: datetime) -> Segments:
    """[(from_utc, offset_seconds)] covering [start, end): where the zone's offset changes.

    Pure Python, an hour at a time: ~0.5 s for the longest range (366 months). Callers run
    it off the event loop (`_segments`) and the answer is cached per zone and range.
    """

    def offset(moment: datetime) -> int:
        delta = moment.astimezone(tz).utcoffset()
        return int(delta.total_seconds()) if delta else 0

    segments = [(start, offset(start))]
    step = timedelta(hours=1)
    cursor = start
    while cursor < end:
        probe = min(cursor + step, end)
        if offset(probe) != segments[-1][1]:
            lo, hi = cursor, probe  # the change happens in (lo, hi]: find the second
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if offset(mid) == segments[-1][1]:
                    lo = mid
                else:
                    hi = mid
            segments.append((hi.replace(microsecond=0), offset(hi)))
        cursor = probe
    return tuple(segments)


async def _segments(win: Window) -> Segments:
    return await asyncio.to_thread(offset_segments, win.tz, win.start, win.end)


def _local_day(
    column: ColumnElement[Any], win: Window, dialect: str, segments: Segments = ()
) -> ColumnElement[Any]:
    """The local bucket of `column`; on SQLite from the zone's `segments` over the window."""
    if dialect == "postgresql":
        local = func.timezone(win.tz_name, column)
        if win.interval == "day":
            return cast(local, Date)
        return cast(func.date_trunc(win.interval, local), Date)
    modifier: ColumnElement[Any]
    if len(segments) == 1:
        modifier = literal(f"{segments[0][1]:+d} seconds")
    else:
        whens = [
            (column < segments[i + 1][0], f"{segments[i][1]:+d} seconds")
            for i in range(len(segments) - 1)
        ]
        modifier = case(*whens, else_=f"{segments[-1][1]:+d} seconds")
    if win.interval == "week":
        return func.date(column, modifier, "-6 days", "weekday 1")
    if win.interval == "month":
        return func.date(column, modifier, "start of month")
    return func.date(column, modifier)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


async def _series(
    session: AsyncSession,
    column: ColumnElement[Any],
    where: Sequence[ColumnElement[bool]],
    win: Window,
) -> dict[date, int]:
    dialect = session.sync_session.get_bind().dialect.name
    segments = await _segments(win) if dialect != "postgresql" else ()
    bucket = _local_day(column, win, dialect, segments).label("bucket")
    stmt = (
        select(bucket, func.count().label("n"))
        .where(*where, column >= win.start, column < win.end)
        .group_by(bucket)
    )
    return {_as_date(b): int(n) for b, n in (await session.execute(stmt)).all()}


# Live inquiries per 15-minute UTC bucket and status (PostgreSQL, migration 0003).
_rollup = table(
    "inquiry_rollup",
    column("bucket", DateTime(timezone=True)),
    column("status", String()),
    column("n", BigInteger()),
)
_QUARTER_HOUR = 900


def _aligned(moment: datetime) -> bool:
    return moment.timestamp() % _QUARTER_HOUR == 0


def _rollup_exact(win: Window) -> bool:
    """Whether every local bucket edge in the window falls on a 15-minute UTC boundary.

    Then no rollup bucket straddles two local buckets, so summing them is exact. Checking
    only the window's ends is not enough: Singapore was UTC+7:20 from 1933 to 1941, so the
    months of 1932-12..1941-12 start and end on quarter hours but not the months between.
    """
    edges = [win.start, win.end]
    edges += [_utc_start(b, win.tz) for b in win.buckets if b > win.first]
    return all(_aligned(edge) for edge in edges)


async def _inquiry_counts(session: AsyncSession, win: Window) -> list[tuple[date, str, int]]:
    """(local bucket, status, count) of live inquiries created in the window: one query."""
    dialect = session.sync_session.get_bind().dialect.name
    if dialect == "postgresql" and _rollup_exact(win):
        bucket = _local_day(_rollup.c.bucket, win, dialect).label("bucket")
        stmt = (
            select(bucket, _rollup.c.status, func.sum(_rollup.c.n))
            .where(_rollup.c.bucket >= win.start, _rollup.c.bucket < win.end)
            .group_by(bucket, _rollup.c.status)
        )
    else:
        created = Inquiry.__table__.c.created_at
        segments = await _segments(win) if dialect != "postgresql" else ()
        bucket = _local_day(created, win, dialect, segments).label("bucket")
        stmt = (
            select(bucket, Inquiry.status, func.count())
            .where(Inquiry.deleted_at.is_(None), created >= win.start, created < win.end)
            .group_by(bucket, Inquiry.status)
        )
    rows = (await session.execute(stmt)).all()
    return [(_as_date(b), str(status), int(n)) for b, status, n in rows if n]


class StatisticsService:
    async def inquiries(self, session: AsyncSession, win: Window) -> InquiryStatistics:
        per_bucket: dict[date, int] = {}
        by_status = {s.value: 0 for s in InquiryStatus}
        for bucket, status, n in await _inquiry_counts(session, win):
            per_bucket[bucket] = per_bucket.get(bucket, 0) + n
            by_status[status] = by_status.get(status, 0) + n
        series = [
            InquiryBucket(bucket=b.isoformat(), count=per_bucket.get(b, 0)) for b in win.buckets
        ]
        return InquiryStatistics(
            range=win.range(),
            total=sum(item.count for item in series),
            by_status=ByStatus(**by_status),
            series=series,
        )

    async def subscribers(self, session: AsyncSession, win: Window) -> SubscriberStatistics:
        live = [Subscriber.deleted_at.is_(None)]
        table = Subscriber.__table__
        # A PENDING subscriber (double opt-in) has not subscribed yet: counted at its
        # confirmation, which sets subscribedAt.
        confirmed = [*live, Subscriber.status != SubscriberStatus.PENDING.value]
        subscribed = await _series(session, table.c.subscribed_at, confirmed, win)
        left = await _series(session, table.c.unsubscribed_at, live, win)
        totals = dict(
            (
                await session.execute(
                    select(Subscriber.status, func.count()).where(*live).group_by(Subscriber.status)
                )
            ).all()
        )
        return SubscriberStatistics(
            range=win.range(),
            active=int(totals.get(SubscriberStatus.ACTIVE.value, 0)),
            unsubscribed=int(totals.get(SubscriberStatus.UNSUBSCRIBED.value, 0)),
            pending=int(totals.get(SubscriberStatus.PENDING.value, 0)),
            series=[
                SubscriberBucket(
                    bucket=b.isoformat(),
                    subscribed=subscribed.get(b, 0),
                    unsubscribed=left.get(b, 0),
                )
                for b in win.buckets
            ],
        )


statistics = StatisticsService()
