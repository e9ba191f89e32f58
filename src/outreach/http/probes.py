"""Liveness, readiness and metrics routes (API.md section 2)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.pool import QueuePool
from starlette.responses import JSONResponse, Response

from outreach.db.fast import AsyncpgDB
from outreach.db.migrate import current_revision, head_revision
from outreach.jobs import stats as queue_stats
from outreach.state import State, state_of

CHECK_TIMEOUT = 2.0
POOL_SAMPLE_SECONDS = 5.0


class Health(BaseModel):
    status: Literal["ok"]


class ReadinessChecks(BaseModel):
    database: Literal["ok", "fail"]
    migrations: Literal["ok", "pending"]
    redis: Literal["ok", "down", "disabled"]


class Readiness(BaseModel):
    status: Literal["ok", "fail"]
    checks: ReadinessChecks


async def _database(state: State) -> tuple[str, str]:
    engine = state.engine
    fastdb = state.fastdb
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with engine.connect() as conn:
                revision = await current_revision(conn)
            if isinstance(fastdb, AsyncpgDB):
                # The public writes' own pool: it can fail apart from SQLAlchemy's (its own
                # connections, limits and checkouts).
                async with fastdb.acquire() as raw:
                    await raw.fetchval("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure is "fail"
        return "fail", "pending"
    return "ok", ("ok" if revision == head_revision() else "pending")


async def _redis(state: State) -> str:
    redis = state.redis
    if redis is None:
        return "disabled"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await redis.ping()
    except Exception:  # noqa: BLE001
        return "down"
    return "ok"


async def readiness(request: Request) -> tuple[bool, dict[str, Any]]:
    state = state_of(request)
    (database, migrations), redis = await asyncio.gather(_database(state), _redis(state))
    ready = database == "ok" and migrations == "ok" and not state.shutting_down
    ready = ready and state.ids_ready()
    body = {
        "status": "ok" if ready else "fail",
        "checks": {"database": database, "migrations": migrations, "redis": redis},
    }
    return ready, body


HEALTHZ_BODY = b'{"status":"ok"}'


async def readyz_response(request: Request) -> Response:
    """Readiness as an answer: 200, or 503 with Retry-After."""
    ready, body = await readiness(request)
    headers = None if ready else {"Retry-After": "5"}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


def probe_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz() -> Response:
        """Liveness: 200 while the process serves; checks no dependency."""
        return Response(HEALTHZ_BODY, media_type="application/json")

    @router.get(
        "/readyz",
        response_model=Readiness,
        summary="Readiness",
        responses={503: {"model": Readiness, "description": "Not ready"}},
    )
    async def readyz(request: Request) -> Response:
        """Readiness: database answers at the newest migration; Redis only degrades realtime."""
        return await readyz_response(request)

    return router


async def _queue_gauges(state: State) -> None:
    """The queue as the database holds it (the same on every replica), at each scrape. A
    database that does not answer within CHECK_TIMEOUT leaves the last values."""
    m = state.metrics
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), state.fastdb.reading() as conn:
            found = {s.kind: s for s in await queue_stats(conn)}
    except Exception:  # noqa: BLE001 - a scrape must still answer
        return
    depth = 0
    for kind in {*state.jobs.registry.kinds(), *found}:
        stats = found.get(kind)
        m.jobs_queued.labels(kind=kind).set(stats.queued if stats else 0)
        m.jobs_oldest.labels(kind=kind).set(round(stats.oldest_seconds, 3) if stats else 0)
        m.jobs_failed.labels(kind=kind).set(stats.failed if stats else 0)
        if kind.startswith("mail.") and stats is not None:
            depth += stats.queued
    m.mail_queue_depth.set(depth)


def _pool_gauges(state: State) -> None:
    """This process's connection pools (each worker has its own: summed over the workers)."""
    m = state.metrics
    pool = state.engine.pool
    if isinstance(pool, QueuePool):  # PostgreSQL (SQLite's pool keeps no counts)
        in_use = pool.checkedout()
        m.db_pool_size.labels("sqlalchemy").set(pool.checkedin() + in_use)
        m.db_pool_checked_out.labels("sqlalchemy").set(in_use)
    fastdb = state.fastdb
    if isinstance(fastdb, AsyncpgDB):
        stats = fastdb.pool_stats()
        m.db_pool_size.labels("asyncpg").set(stats.size)
        m.db_pool_checked_out.labels("asyncpg").set(stats.in_use)
        m.db_pool_waiters.labels("asyncpg").set(stats.waiters)


class PoolSampler:
    """With several workers only one answers a scrape: every worker writes its pools' gauges
    every POOL_SAMPLE_SECONDS too, so the pod's sum is at most that old for the others."""

    def __init__(self, state: State, interval: float = POOL_SAMPLE_SECONDS) -> None:
        self._state = state
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            _pool_gauges(self._state)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def metrics_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        state = state_of(request)
        m = state.metrics
        _pool_gauges(state)
        await _queue_gauges(state)
        body, content_type = m.render()
        return Response(body, media_type=content_type)

    return router
