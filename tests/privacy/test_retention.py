"""The retention job (API.md section 14, INQUIRY_RETENTION_DAYS) on PostgreSQL and SQLite,
with a short interval standing in for the day: it erases old inquiries and only those, with
`actorId` null; it runs on one replica at a time, in batches, again and again without harm;
and a submit flood running beside it never waits on a lock for as long as 100 ms."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from joserfc.jwk import ECKey
from sqlalchemy import func, select, update

from outreach.db.base import utcnow
from outreach.inquiries.models import Inquiry
from outreach.privacy import retention
from tests.support import BASE, Api, make_settings, migrated_database, start_api

INQUIRIES = f"{BASE}/inquiries"
DAYS = 30


@pytest.fixture(params=["postgresql", "sqlite"])
async def own_api(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    var_dir: Path,
    dev_key: ECKey,
) -> AsyncIterator[Api]:
    """An app on a database of its own, its retention run every 0.3 s."""
    async with migrated_database(request.param, tmp_path_factory.mktemp("retention")) as url:
        settings = make_settings(
            url, var_dir, inquiry_retention_days=DAYS, retention_interval_seconds=0.3
        )
        async with start_api(settings, dev_key) as api:
            yield api


async def submit(api: Api, tag: str) -> str:
    body = {"name": f"Lê {tag}", "email": f"{tag}@example.com", "message": f"hỏi {tag}"}
    answer = await api.client.post(f"{INQUIRIES}/submit", json=body)
    assert answer.status_code == 201, answer.text
    inquiry_id: str = answer.json()["id"]
    return inquiry_id


async def age(api: Api, ids: list[str], days: float) -> None:
    async with api.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Inquiry)
            .where(Inquiry.id.in_([int(i) for i in ids]))
            .values(created_at=utcnow() - timedelta(days=days))
        )


async def get(api: Api, inquiry_id: str, path: str = "") -> Any:
    answer = await api.client.get(f"{INQUIRIES}/{inquiry_id}{path}", headers=api.owner)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_old_inquiries_are_erased_by_the_job_and_young_ones_kept(own_api: Api) -> None:
    api = own_api
    tags = [uuid.uuid4().hex[:10] for _ in range(4)]
    old, edge, young, fresh = [await submit(api, tag) for tag in tags]
    comment = await api.client.post(
        f"{INQUIRIES}/{old}/comments", json={"body": f"{tags[0]} gọi lại"}, headers=api.owner
    )
    assert comment.status_code == 201
    with structlog.testing.capture_logs() as logs:
        await age(api, [old], DAYS + 5)
        await age(api, [edge], DAYS + 0.01)
        await age(api, [young], DAYS - 1)
        deadline = time.monotonic() + 15
        while (await get(api, edge))["name"] != "[erased]" or (await get(api, old))[
            "name"
        ] != "[erased]":
            assert time.monotonic() < deadline, "the job did not erase the old inquiries"
            await asyncio.sleep(0.1)

    for erased, tag in ((old, tags[0]), (edge, tags[1])):
        got = await get(api, erased)
        assert (got["email"], got["message"]) == (f"erased-{erased}@invalid", "[erased]")
        entries = (await get(api, erased, "/history"))["data"]
        (entry,) = [e for e in entries if e["action"] == "erased"]
        assert entry["actorId"] is None
        assert tag not in str(entries)
    assert [c["body"] for c in (await get(api, old, "/comments"))["data"]] == ["[erased]"]
    for kept, tag in ((young, tags[2]), (fresh, tags[3])):
        got = await get(api, kept)
        assert (got["name"], got["email"]) == (f"Lê {tag}", f"{tag}@example.com")
    lines = [e for e in logs if e["event"] == "Retention erased inquiries"]
    assert sum(line["inquiries"] for line in lines) == 2
    assert all(tag not in str(logs) for tag in tags[:2])

    # Idempotent: a run now finds nothing left, and changes nothing.
    before = (await get(api, old))["updatedAt"]
    assert await retention.run(api.state, DAYS) == 0
    assert await retention.due(api.state, DAYS) == 0
    assert (await get(api, old))["updatedAt"] == before
    entries = (await get(api, old, "/history"))["data"]
    assert [e["action"] for e in entries].count("erased") == 1


@pytest.fixture
async def pg_own(
    tmp_path_factory: pytest.TempPathFactory, var_dir: Path, dev_key: ECKey
) -> AsyncIterator[tuple[Api, str]]:
    """An app on a PostgreSQL database of its own; its retention run by the test alone."""
    async with migrated_database("postgresql", tmp_path_factory.mktemp("flood")) as url:
        async with start_api(make_settings(url, var_dir, db_pool_size=12), dev_key) as api:
            yield api, url


async def seed_old(url: str, count: int) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(
            """
            INSERT INTO inquiries (id, name, email, message, status, priority, search_text,
                                   created_at, updated_at)
            SELECT 4000000000000000000 + g, 'Old ' || g, 'old' || g || '@example.com',
                   'message ' || g, 'SENT', 'NORMAL', 'old ' || g,
                   now() - interval '400 days' + g * interval '1 second', now()
            FROM generate_series(1, $1) AS g
            """,
            count,
        )
    finally:
        await conn.close()


async def test_two_replicas_never_run_it_at_once(pg_own: tuple[Api, str]) -> None:
    api, url = pg_own
    await seed_old(url, 1200)
    first, second = await asyncio.gather(
        retention.run(api.state, DAYS), retention.run(api.state, DAYS)
    )
    # The second found the advisory lock taken and skipped; the first did it all, in batches.
    assert sorted([first, second]) == [0, 1200]
    assert await retention.due(api.state, DAYS) == 0


LOCK_WAITS = """SELECT extract(epoch FROM clock_timestamp() - query_start) AS running
   FROM pg_stat_activity
   WHERE datname = current_database() AND wait_event_type = 'Lock'"""


async def the_probe_sees_a_lock_wait(watcher: asyncpg.Connection, dsn: str) -> None:
    """The probe below is not blind: a backend blocked on a row lock shows in it."""
    holder, waiter = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        hold = holder.transaction()
        await hold.start()
        await holder.execute("SELECT id FROM inquiries ORDER BY id LIMIT 1 FOR UPDATE")
        blocked = asyncio.create_task(
            waiter.execute(
                "UPDATE inquiries SET note = 'x' WHERE id = (SELECT min(id) FROM inquiries)"
            )
        )
        await asyncio.sleep(0.2)
        assert [r["running"] for r in await watcher.fetch(LOCK_WAITS)] != []
        await hold.rollback()
        await blocked
    finally:
        await holder.close()
        await waiter.close()


async def test_a_submit_flood_beside_the_job_never_waits_100_ms_on_a_lock(
    pg_own: tuple[Api, str],
) -> None:
    api, url = pg_own
    await seed_old(url, 10 * retention.BATCH)
    dsn = url.replace("postgresql+asyncpg", "postgresql")
    watcher = await asyncpg.connect(dsn)
    await the_probe_sees_a_lock_wait(watcher, dsn)
    waits: list[float] = []
    polls = 0
    told: list[str] = []
    done = asyncio.Event()

    async def watch() -> None:
        # Any backend of this database waiting on a lock, and for how long it has run so far
        # (an upper bound of its wait), every 5 ms.
        nonlocal polls
        while not done.is_set():
            rows = await watcher.fetch(LOCK_WAITS)
            polls += 1
            waits.extend(float(r["running"]) for r in rows)
            await asyncio.sleep(0.005)

    async def flood(worker: int) -> None:
        n = 0
        while not done.is_set() or n < 20:
            tag = f"flood-{worker}-{n}"
            body = {"name": tag, "email": f"{tag}@example.com", "message": tag}
            answer = await api.client.post(f"{INQUIRIES}/submit", json=body)
            assert answer.status_code == 201, answer.text
            told.append(answer.json()["id"])
            n += 1

    async def job() -> int:
        try:
            await asyncio.sleep(0.05)
            return await retention.run(api.state, DAYS)
        finally:
            done.set()

    watching = asyncio.create_task(watch())
    started = time.monotonic()
    erased, *_ = await asyncio.gather(job(), *(flood(w) for w in range(16)))
    elapsed = time.monotonic() - started
    await watching
    await watcher.close()

    assert erased == 10 * retention.BATCH
    async with api.state.sessionmaker() as session:
        stored = await session.scalar(
            select(func.count()).select_from(Inquiry).where(Inquiry.id.in_([int(i) for i in told]))
        )
    assert stored == len(told), "every submit answered 201 is stored"
    longest = max(waits, default=0.0)
    print(  # noqa: T201 - the figure the issue asks to be measured
        f"\nretention of {erased} beside {len(told)} submits in {elapsed:.2f} s: "
        f"{polls} polls, {len(waits)} saw a lock wait, the longest {longest * 1000:.1f} ms"
    )
    assert longest < 0.1, f"a lock wait of {longest * 1000:.0f} ms"
