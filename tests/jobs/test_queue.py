"""The job queue in one process: enqueue joins the caller's transaction, retries follow the
kind's schedule, failures are kept, two workers never run one job twice, stop hands back.

Real PostgreSQL (pgqueuer) and SQLite (the in-process poller), each on a database of its
own (tests/support.py: migrated_database), so no other app's worker takes these jobs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from outreach.config import Settings
from outreach.db.base import make_engine, make_sessionmaker
from outreach.db.fast import FastDB, make_fastdb
from outreach.jobs import (
    LEAF,
    MAIL_SCHEDULE,
    WEBHOOK_SCHEDULE,
    GiveUp,
    Job,
    Registry,
    RetryLater,
    Schedule,
    Worker,
    enqueue,
    make_worker,
    stats,
)
from tests.support import migrated_database

FAST = Schedule((0.2, 0.4, 0.8))


@dataclass
class QueueDB:
    settings: Settings
    engine: AsyncEngine
    fastdb: FastDB
    sessions: async_sessionmaker[AsyncSession]
    workers: list[Worker] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return self.fastdb.dialect

    def worker(self, registry: Registry, **options: Any) -> Worker:
        options.setdefault("poll_seconds", 0.2)
        options.setdefault("heartbeat_timeout", 2.0)
        worker = make_worker(self.settings.sqlalchemy_url, self.engine, registry, **options)
        self.workers.append(worker)
        return worker

    async def rows(self, kind: str) -> list[dict[str, Any]]:
        """The queue's rows of one kind: (status, attempts)."""
        if self.dialect == "postgresql":
            sql = "SELECT status::text AS status, attempts FROM pgqueuer WHERE entrypoint = :k"
        else:
            # A claimed job (its lease not expired) is what pgqueuer calls picked.
            sql = (
                "SELECT CASE WHEN locked_until > (julianday('now') - 2440587.5) * 86400.0 "
                "THEN 'picked' ELSE status END AS status, attempts FROM jobs WHERE kind = :k"
            )
        async with self.engine.connect() as conn:
            result = await conn.execute(text(sql), {"k": kind})
            return [dict(r._mapping) for r in result]


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
async def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[QueueDB]:
    var_dir = tmp_path_factory.mktemp("jobs")
    async with migrated_database(request.param, var_dir) as url:
        settings = Settings(database_url=url, app_env="test", var_dir=var_dir)
        engine = make_engine(settings)
        fastdb = make_fastdb(engine, settings.sqlalchemy_url, 4)
        await fastdb.open()
        try:
            yield QueueDB(settings, engine, fastdb, make_sessionmaker(engine))
        finally:
            await fastdb.close()
            await engine.dispose()


@pytest.fixture(autouse=True)
async def _stop_workers(db: QueueDB) -> AsyncIterator[None]:
    yield
    for worker in db.workers:
        await worker.stop(1.0)
    db.workers.clear()


def new_kind() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


class Calls:
    """What a handler saw, in order."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.at: list[float] = []

    def record(self, job: Job) -> None:
        self.jobs.append(job)
        self.at.append(time.monotonic())


async def enqueue_then_fail(fastdb: FastDB, kind: str) -> None:
    async with fastdb.transaction() as conn:
        await enqueue(conn, kind, {"n": 2})
        raise RuntimeError("roll back")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def recording(calls: Calls, then: Callable[[Job], Awaitable[None]] | None = None) -> Any:
    async def handler(job: Job) -> None:
        calls.record(job)
        if then is not None:
            await then(job)

    return handler


# ---- the schedules ----------------------------------------------------------------------


def test_mail_schedule_is_section_12s_and_lasts_at_least_a_day() -> None:
    delays = [MAIL_SCHEDULE.delay_after(n, age_seconds=0) for n in range(1, 6)]
    assert delays == [5, 30, 120, 600, 1800]
    # Every 30 min while the job is younger than 24 h, then given up.
    assert MAIL_SCHEDULE.delay_after(40, age_seconds=23 * 3600) == 1800
    assert MAIL_SCHEDULE.delay_after(40, age_seconds=24 * 3600) is None
    # Tried until at least a day after it was queued, whatever the attempts were.
    age, attempt = 0.0, 1
    while (delay := MAIL_SCHEDULE.delay_after(attempt, age)) is not None:
        age += delay
        attempt += 1
    assert age >= 24 * 3600
    assert attempt < 60


def test_webhook_schedule_is_section_13s_then_gives_up() -> None:
    delays = [WEBHOOK_SCHEDULE.delay_after(n, age_seconds=0) for n in range(1, 9)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000, None]


# ---- enqueue joins the transaction -------------------------------------------------------


async def test_a_job_runs_once_its_transaction_commits_and_never_after_a_rollback(
    db: QueueDB,
) -> None:
    kind = new_kind()
    calls = Calls()
    registry = Registry()
    registry.add(kind, recording(calls), FAST)
    worker = db.worker(registry)
    await worker.start()
    await worker.wait_started()

    async with db.fastdb.transaction() as conn:
        await enqueue(conn, kind, {"n": 1})
        await asyncio.sleep(0.8)  # the worker polls (and listens) meanwhile
        assert calls.jobs == [], "a job must not run before its transaction commits"
    with pytest.raises(RuntimeError):
        await enqueue_then_fail(db.fastdb, kind)
    async with db.sessions() as session:  # the ORM session of the admin routes
        await enqueue(session, kind, {"n": 3})
        await session.commit()
    async with db.sessions() as session:
        await enqueue(session, kind, {"n": 4})
        await session.rollback()

    async def both_ran() -> bool:
        return len(calls.jobs) >= 2

    await eventually(both_ran)
    await asyncio.sleep(0.8)
    assert sorted(j.payload["n"] for j in calls.jobs) == [1, 3]
    assert {j.attempt for j in calls.jobs} == {1}
    assert await db.rows(kind) == []  # done jobs leave the queue


async def test_a_delayed_job_waits(db: QueueDB) -> None:
    kind = new_kind()
    calls = Calls()
    registry = Registry()
    registry.add(kind, recording(calls), FAST)
    worker = db.worker(registry)
    await worker.start()
    await worker.wait_started()
    queued = time.monotonic()
    await enqueue(db.fastdb, kind, {}, delay_seconds=1.5)

    async def ran() -> bool:
        return bool(calls.jobs)

    await eventually(ran)
    assert calls.at[0] - queued >= 1.4


# ---- retries and failures -----------------------------------------------------------------


async def test_a_failing_job_is_retried_on_its_schedule_then_succeeds(db: QueueDB) -> None:
    kind = new_kind()
    calls = Calls()

    async def fail_twice(job: Job) -> None:
        if job.attempt <= 2:
            raise RetryLater("not yet")

    registry = Registry()
    registry.add(kind, recording(calls, fail_twice), FAST)
    worker = db.worker(registry)
    await worker.start()
    await enqueue(db.fastdb, kind, {"x": "y"})

    async def three() -> bool:
        return len(calls.jobs) == 3

    await eventually(three)
    assert [j.attempt for j in calls.jobs] == [1, 2, 3]
    assert len({j.id for j in calls.jobs}) == 1, "a retry is the same job"
    assert all(j.payload == {"x": "y"} for j in calls.jobs)
    gaps = [b - a for a, b in zip(calls.at, calls.at[1:], strict=False)]
    assert gaps[0] >= 0.2 * 0.9, gaps
    assert gaps[1] >= 0.4 * 0.9, gaps

    async def gone() -> bool:
        return await db.rows(kind) == []

    await eventually(gone)


@pytest.mark.parametrize("error", ["retry", "exception"])
async def test_past_its_schedule_a_job_is_failed_and_kept(db: QueueDB, error: str) -> None:
    kind = new_kind()
    calls = Calls()

    async def always(_: Job) -> None:
        if error == "retry":
            raise RetryLater("still down")
        raise KeyError("a bug")

    registry = Registry()
    registry.add(kind, recording(calls, always), Schedule((0.1, 0.1)))
    worker = db.worker(registry)
    await worker.start()
    await enqueue(db.fastdb, kind, {})

    async def failed() -> bool:
        return [r["status"] for r in await db.rows(kind)] == ["failed"]

    await eventually(failed)
    await asyncio.sleep(0.5)
    assert [j.attempt for j in calls.jobs] == [1, 2, 3]  # the first try and two retries
    async with db.fastdb.reading() as conn:
        kept = {s.kind: s for s in await stats(conn)}[kind]
    assert (kept.queued, kept.failed) == (0, 1)


async def test_give_up_fails_at_once(db: QueueDB) -> None:
    kind = new_kind()
    calls = Calls()

    async def refuse(_: Job) -> None:
        raise GiveUp("permanent")

    registry = Registry()
    registry.add(kind, recording(calls, refuse), FAST)
    worker = db.worker(registry)
    await worker.start()
    await enqueue(db.fastdb, kind, {})

    async def failed() -> bool:
        return [r["status"] for r in await db.rows(kind)] == ["failed"]

    await eventually(failed)
    await asyncio.sleep(0.5)
    assert len(calls.jobs) == 1


async def test_stats_count_waiting_jobs_and_the_oldest_age(db: QueueDB) -> None:
    kind = new_kind()
    for n in range(3):
        await enqueue(db.fastdb, kind, {"n": n}, delay_seconds=3600)
    await asyncio.sleep(1.1)
    async with db.fastdb.reading() as conn:
        mine = {s.kind: s for s in await stats(conn)}[kind]
    assert mine.queued == 3
    assert mine.failed == 0
    assert 1.0 <= mine.oldest_seconds < 30


async def test_the_jobs_a_fan_out_queued_run_before_the_fan_outs_waiting(db: QueueDB) -> None:
    """A backlog of fan-outs (each queuing a delivery): with LEAF priority the queue drains
    depth first, so every delivery runs before the fan-outs queued after its own; first in,
    first out it would wait behind all of them (PostgreSQL; SQLite stays FIFO)."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite's in-process queue is first in, first out (README)")
    fan_out, deliver = new_kind(), new_kind()
    order: list[str] = []

    async def fan(job: Job) -> None:
        order.append(f"fan{job.payload['n']}")
        await enqueue(db.fastdb, deliver, {"n": job.payload["n"]}, priority=LEAF)

    async def delivered(job: Job) -> None:
        order.append(f"deliver{job.payload['n']}")

    async with db.fastdb.transaction() as conn:
        for n in range(6):
            await enqueue(conn, fan_out, {"n": n})
    registry = Registry()
    registry.add(fan_out, fan, FAST)
    registry.add(deliver, delivered, FAST)
    worker = db.worker(registry, concurrency=1)  # a job or two at a time
    await worker.start()

    async def all_ran() -> bool:
        return len(order) == 12

    await eventually(all_ran, timeout=30)
    # First in, first out would run fan0..fan5 before deliver0. Depth first, each delivery
    # runs before the fan-out two after its own (one may already be running beside it).
    assert sorted(order) == sorted(f"{step}{n}" for n in range(6) for step in ("fan", "deliver"))
    for n in range(4):
        assert order.index(f"deliver{n}") < order.index(f"fan{n + 2}"), order


# ---- concurrency and stopping --------------------------------------------------------------


async def test_two_workers_run_each_job_exactly_once(db: QueueDB) -> None:
    kind = new_kind()
    calls = Calls()

    async def work(_: Job) -> None:
        await asyncio.sleep(0.01)

    workers = []
    for _ in range(2):
        registry = Registry()
        registry.add(kind, recording(calls, work), FAST)
        workers.append(db.worker(registry))
    for worker in workers:
        await worker.start()
    async with db.fastdb.transaction() as conn:
        for n in range(200):
            await enqueue(conn, kind, {"n": n})

    async def all_ran() -> bool:
        return len(calls.jobs) >= 200 and await db.rows(kind) == []

    await eventually(all_ran, timeout=60)
    await asyncio.sleep(0.5)
    assert sorted(j.payload["n"] for j in calls.jobs) == list(range(200))


async def test_stop_lets_a_running_job_finish(db: QueueDB) -> None:
    kind = new_kind()
    finished: list[int] = []

    async def slow(job: Job) -> None:
        await asyncio.sleep(0.8)
        finished.append(job.id)

    registry = Registry()
    registry.add(kind, slow, FAST)
    worker = db.worker(registry)
    await worker.start()
    await enqueue(db.fastdb, kind, {})

    await asyncio.sleep(0.4)
    await worker.stop(5.0)
    assert len(finished) == 1
    assert await db.rows(kind) == []


async def test_stop_hands_back_a_job_that_runs_too_long(db: QueueDB) -> None:
    kind = new_kind()
    started = asyncio.Event()
    calls = Calls()

    async def endless(job: Job) -> None:
        calls.record(job)
        if len(calls.jobs) == 1:
            started.set()
            await asyncio.sleep(3600)

    first = Registry()
    first.add(kind, endless, FAST)
    worker = db.worker(first, heartbeat_timeout=60.0)  # no lease expiry to the rescue
    await worker.start()
    await enqueue(db.fastdb, kind, {"n": 7})
    await asyncio.wait_for(started.wait(), 10)
    stopping = time.monotonic()
    await worker.stop(0.5)
    assert time.monotonic() - stopping < 5
    rows = await db.rows(kind)
    assert [r["status"] for r in rows] == ["queued"], "handed back, not lost or failed"

    # Another worker takes it at once (no heartbeat timeout to wait for).
    second = Registry()
    second.add(kind, endless, FAST)
    other = db.worker(second, heartbeat_timeout=60.0)
    await other.start()

    async def rerun() -> bool:
        return len(calls.jobs) == 2 and await db.rows(kind) == []

    await eventually(rerun, timeout=5)
    assert calls.jobs[1].payload == {"n": 7}


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # its own LISTEN connection
async def test_a_worker_whose_database_connection_dies_comes_back(db: QueueDB) -> None:
    import asyncpg

    kind = new_kind()
    calls = Calls()
    registry = Registry()
    registry.add(kind, recording(calls), FAST)
    worker = db.worker(registry)
    await worker.start()
    await worker.wait_started()
    await asyncio.sleep(0.5)
    dsn = db.settings.sqlalchemy_url.replace("postgresql+asyncpg", "postgresql")
    admin = await asyncpg.connect(dsn)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'outreach-jobs'"
        )
    finally:
        await admin.close()
    assert killed >= 1
    await enqueue(db.fastdb, kind, {"after": "kill"})

    async def ran() -> bool:
        return bool(calls.jobs)

    await eventually(ran, timeout=20)


# ---- the installed schema -------------------------------------------------------------------


def test_the_migration_installs_what_the_pinned_pgqueuer_prints() -> None:
    """Migration 0010 froze pgqueuer's install SQL; a new pgqueuer release that prints
    something else needs a migration of its own (the pin moves with it)."""
    import importlib.util

    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

    from outreach.db.migrate import MIGRATIONS_DIR

    path = MIGRATIONS_DIR / "versions" / "2026-12-01-1400_mail_queue.py"
    spec = importlib.util.spec_from_file_location("mail_queue_migration", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    printed = QueryBuilderEnvironment().build_install_query().strip()
    assert migration.PGQUEUER_INSTALL.strip() == printed
    assert (
        migration.PGQUEUER_UNINSTALL.strip()
        == QueryBuilderEnvironment().build_uninstall_query().strip()
    )
