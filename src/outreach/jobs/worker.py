"""The workers: pgqueuer's QueueManager on PostgreSQL, an in-process poller on SQLite.

Both run the same handlers the same way (`_attempt`): a handler that returns is done (the
job is deleted); one that raises is retried after the delay its kind's Schedule gives for
that attempt, or, past the schedule, failed and kept (`status = 'failed'`). A worker runs
at most `concurrency` jobs at once.

Stopping (`begin_stop`, then `stop`): no new job is taken; a running job may finish within
the timeout, else it is cancelled and handed back (queued again at once, for any worker).
A process killed outright leaves its jobs picked: on PostgreSQL another worker takes them
over once their heartbeat is `heartbeat_timeout` old, on SQLite once their lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import orjson
import structlog
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import BindParameter

from outreach.core.metrics import Metrics
from outreach.jobs.models import jobs as jobs_table
from outreach.jobs.registry import Entry, GiveUp, Job, Registry, RetryLater, running_job

log = structlog.get_logger("outreach.jobs")

Outcome = tuple[Literal["ok", "retry", "failed"], float | None, str]


class Worker(Protocol):
    registry: Registry

    async def start(self) -> None: ...

    def begin_stop(self) -> None: ...

    async def stop(self, timeout: float) -> None: ...

    async def wait_started(self, timeout: float = 10.0) -> None: ...


APPLICATION_NAME = "outreach-jobs"


class JobFailed(Exception):
    """pgqueuer's signal for a failed job kept in its table (`on_failure="hold"`)."""


async def _attempt(entry: Entry, job: Job, age_seconds: float, metrics: Metrics | None) -> Outcome:
    """Run one attempt of `job`; what to do with it next."""
    token = running_job.set(job.id)
    try:
        return await _run(entry, job, age_seconds, metrics)
    finally:
        running_job.reset(token)


async def _run(entry: Entry, job: Job, age_seconds: float, metrics: Metrics | None) -> Outcome:
    reason: str
    try:
        await entry.handler(job)
    except RetryLater as exc:
        reason = exc.reason
    except GiveUp as exc:
        _count(metrics, job.kind, "failed")
        log.error(
            "Job failed", kind=job.kind, jobId=str(job.id), attempt=job.attempt, reason=exc.reason
        )
        return "failed", None, exc.reason
    except Exception as exc:  # noqa: BLE001 - a bug or an outage: retried like RetryLater
        reason = type(exc).__name__
        log.error(
            "Job handler raised",
            kind=job.kind,
            jobId=str(job.id),
            attempt=job.attempt,
            exc_info=exc,
        )
    else:
        _count(metrics, job.kind, "ok")
        return "ok", None, ""
    delay = entry.schedule.delay_after(job.attempt, age_seconds)
    if delay is None:
        _count(metrics, job.kind, "failed")
        log.error(
            "Job failed", kind=job.kind, jobId=str(job.id), attempt=job.attempt, reason=reason
        )
        return "failed", None, reason
    _count(metrics, job.kind, "retry")
    log.warning(
        "Job will be retried",
        kind=job.kind,
        jobId=str(job.id),
        attempt=job.attempt,
        retryInSeconds=delay,
        reason=reason,
    )
    return "retry", delay, reason


def _count(metrics: Metrics | None, kind: str, outcome: str) -> None:
    if metrics is not None:
        metrics.job_runs.labels(kind=kind, outcome=outcome).inc()


def _payload(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class _Base:
    def __init__(self, registry: Registry, metrics: Metrics | None, concurrency: int) -> None:
        self.registry = registry
        self._metrics = metrics
        self._concurrency = concurrency
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._handing_back = False

    async def start(self) -> None:
        if self._task is None and self.registry.kinds():
            self._task = asyncio.create_task(self._run())

    async def wait_started(self, timeout: float = 10.0) -> None:
        """Until the worker has begun taking jobs (tests)."""
        await asyncio.wait_for(self._started.wait(), timeout)

    def begin_stop(self) -> None:
        """Take no new job (at the shutdown signal, while HTTP requests drain)."""
        self._stopping.set()

    async def stop(self, timeout: float) -> None:
        """Let running jobs finish for up to `timeout` seconds, then hand them back."""
        self.begin_stop()
        self._wake()
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            self._handing_back = True
            log.warning("Jobs handed back at shutdown", running=len(self._running))
            for running in list(self._running):
                running.cancel()
            done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        elif not task.cancelled() and task.exception() is not None:
            log.error("Job worker ended", error=type(task.exception()).__name__)
        self._task = None

    def _wake(self) -> None:
        return None

    async def _run(self) -> None:
        raise NotImplementedError

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


class PgWorker(_Base):
    """pgqueuer's QueueManager on its own asyncpg connection (LISTEN needs one), restarted
    with a backoff when that connection is lost."""

    def __init__(
        self,
        dsn: str,
        registry: Registry,
        metrics: Metrics | None = None,
        *,
        concurrency: int = 10,
        heartbeat_timeout: float = 30.0,
        poll_seconds: float = 10.0,
    ) -> None:
        super().__init__(registry, metrics, concurrency)
        self._dsn = dsn
        self._heartbeat = timedelta(seconds=heartbeat_timeout)
        self._poll = timedelta(seconds=poll_seconds)
        self._qm: Any = None

    def begin_stop(self) -> None:
        super().begin_stop()
        if self._qm is not None:
            self._qm.shutdown.set()

    async def _run(self) -> None:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.qm import QueueManager
        from pgqueuer.queries import Queries

        backoff = 1.0
        while not self._stopping.is_set():
            conn: Any = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=5,
                    command_timeout=30,
                    # Named in pg_stat_activity: the worker's LISTEN connection, one a process.
                    server_settings={"application_name": APPLICATION_NAME},
                )
                qm = QueueManager(Queries(AsyncpgDriver(conn)))
                for kind in self.registry.kinds():
                    qm.entrypoint(kind, on_failure="hold")(self._entrypoint)
                self._qm = qm
                if self._stopping.is_set():
                    break
                self._started.set()
                batch = max(1, self._concurrency // 2)
                await qm.run(
                    dequeue_timeout=self._poll,
                    batch_size=batch,
                    max_concurrent_tasks=2 * batch,
                    heartbeat_timeout=self._heartbeat,
                    # pgqueuer's statistics table is not used: its log is purged instead.
                    log_aggregation_interval=timedelta(0),
                )
                backoff = 1.0
            except Exception as exc:  # noqa: BLE001 - the database went away: try again
                if self._stopping.is_set():
                    break
                log.warning(
                    "Job worker lost the database, retrying",
                    error=type(exc).__name__,
                    retryInSeconds=backoff,
                )
                await self._pause(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self._qm = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 5)
                    if not conn.is_closed():
                        conn.terminate()

    async def _entrypoint(self, pgq_job: Any) -> None:
        from pgqueuer.errors import RetryRequested

        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            entry = self.registry.get(str(pgq_job.entrypoint))
            payload = _payload(pgq_job.payload)
            if entry is None or payload is None:
                raise JobFailed("unknown kind or unreadable payload") from None
            created: datetime = pgq_job.created
            job = Job(
                id=int(pgq_job.id),
                kind=str(pgq_job.entrypoint),
                payload=payload,
                attempt=int(pgq_job.attempts) + 1,
                enqueued_at=created,
            )
            age = (datetime.now(UTC) - created).total_seconds()
            try:
                outcome, delay, reason = await _attempt(entry, job, age, self._metrics)
            except asyncio.CancelledError:
                if not self._handing_back:
                    raise
                task.uncancel()
                # Queued again at once (pgqueuer counts it as an attempt; the schedule's
                # `until` is counted from the first enqueue, so the total is not shortened).
                raise RetryRequested(timedelta(0), "handed back at shutdown") from None
            if outcome == "retry":
                assert delay is not None
                raise RetryRequested(timedelta(seconds=delay), reason) from None
            if outcome == "failed":
                raise JobFailed(reason) from None
        finally:
            self._running.discard(task)


# Unix seconds in SQLite (julianday is days since noon, November 24, 4714 BC).
def _now() -> float:
    return time.time()


_ID: BindParameter[int] = bindparam("p_id")
_ME: BindParameter[str] = bindparam("p_me")


class SqliteWorker(_Base):
    """The embedded default: polls our `jobs` table in this process (see the module and
    README's notes on what it does not promise)."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: Registry,
        metrics: Metrics | None = None,
        *,
        concurrency: int = 4,
        heartbeat_timeout: float = 30.0,
        poll_seconds: float = 0.5,
    ) -> None:
        super().__init__(registry, metrics, concurrency)
        self._engine = engine
        self._lease = heartbeat_timeout  # a claim's lease, renewed every third of it
        self._poll = poll_seconds
        self._me = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._kick = asyncio.Event()
        t = jobs_table
        self._claim_stmt = (
            update(t)
            .where(
                t.c.id
                == select(t.c.id)
                .where(
                    t.c.status == "queued",
                    t.c.run_at <= bindparam("p_now"),
                    (t.c.locked_until.is_(None)) | (t.c.locked_until < bindparam("p_now")),
                    t.c.kind.in_(bindparam("p_kinds", expanding=True)),
                )
                .order_by(t.c.run_at, t.c.id)
                .limit(1)
                .scalar_subquery()
            )
            .values(locked_by=_ME, locked_until=bindparam("p_until"))
            .returning(t.c.id, t.c.kind, t.c.payload, t.c.attempts, t.c.created_at)
        )
        mine = (t.c.id == _ID) & (t.c.locked_by == _ME)
        self._renew = update(t).where(mine).values(locked_until=bindparam("p_until"))
        self._done = delete(t).where(mine)
        self._retry = (
            update(t)
            .where(mine)
            .values(
                attempts=t.c.attempts + 1,
                run_at=bindparam("p_run_at"),
                locked_by=None,
                locked_until=None,
                error=bindparam("p_error"),
            )
        )
        self._fail = (
            update(t)
            .where(mine)
            .values(
                status="failed",  # `attempts` counts the retries, as pgqueuer's does
                locked_by=None,
                locked_until=None,
                error=bindparam("p_error"),
            )
        )
        self._release = update(t).where(mine).values(locked_by=None, locked_until=None)

    def _wake(self) -> None:
        self._kick.set()

    async def _exec(self, stmt: Any, params: dict[str, Any]) -> Sequence[Any]:
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt, params)
            return result.all() if result.returns_rows else []

    async def _run(self) -> None:
        self._started.set()
        backoff = 1.0
        slots = asyncio.Semaphore(self._concurrency)
        kinds = list(self.registry.kinds())
        while not self._stopping.is_set():
            await slots.acquire()
            if self._stopping.is_set():
                slots.release()
                break
            now = _now()
            try:
                rows = await self._exec(
                    self._claim_stmt,
                    {
                        "p_now": now,
                        "p_until": now + self._lease,
                        "p_me": self._me,
                        "p_kinds": kinds,
                    },
                )
                backoff = 1.0
            except Exception as exc:  # noqa: BLE001 - database busy or gone: try again
                slots.release()
                log.warning("Job worker cannot read the queue", error=type(exc).__name__)
                await self._pause(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if not rows:
                slots.release()
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self._poll)
                continue
            task = asyncio.create_task(self._work(rows[0]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _: slots.release())
            task.add_done_callback(lambda _: self._kick.set())
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _heartbeat(self, job_id: int) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            with contextlib.suppress(Exception):
                await self._exec(
                    self._renew, {"p_id": job_id, "p_me": self._me, "p_until": _now() + self._lease}
                )

    async def _work(self, row: Any) -> None:
        job_id = int(row.id)
        keys = {"p_id": job_id, "p_me": self._me}
        entry = self.registry.get(row.kind)
        payload = _payload(row.payload)
        if entry is None or payload is None:
            await self._exec(self._fail, {**keys, "p_error": "unknown kind or unreadable payload"})
            return
        job = Job(
            id=job_id,
            kind=row.kind,
            payload=payload,
            attempt=int(row.attempts) + 1,
            enqueued_at=datetime.fromtimestamp(row.created_at, UTC),
        )
        beat = asyncio.create_task(self._heartbeat(job_id))
        try:
            outcome, delay, reason = await _attempt(
                entry, job, _now() - row.created_at, self._metrics
            )
        except asyncio.CancelledError:
            if not self._handing_back:
                raise
            await asyncio.shield(self._exec(self._release, keys))
            return
        finally:
            beat.cancel()
        for attempt in range(5):  # the queue's own bookkeeping must not be lost to a busy file
            try:
                if outcome == "ok":
                    await self._exec(self._done, keys)
                elif outcome == "retry":
                    assert delay is not None
                    await self._exec(
                        self._retry, {**keys, "p_run_at": _now() + delay, "p_error": reason}
                    )
                else:
                    await self._exec(self._fail, {**keys, "p_error": reason})
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("Job outcome not recorded yet", error=type(exc).__name__)
                await asyncio.sleep(0.2 * (attempt + 1))


def make_worker(
    sqlalchemy_url: str,
    engine: AsyncEngine,
    registry: Registry,
    metrics: Metrics | None = None,
    **options: Any,
) -> Worker:
    """The worker for the configured database (PostgreSQL: pgqueuer; SQLite: the poller)."""
    if sqlalchemy_url.startswith("postgresql+asyncpg://"):
        dsn = "postgresql://" + sqlalchemy_url[len("postgresql+asyncpg://") :]
        return PgWorker(dsn, registry, metrics, **options)
    return SqliteWorker(engine, registry, metrics, **options)
