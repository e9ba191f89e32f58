"""The queue's guarantees with real worker processes on PostgreSQL: each job by one worker,
a worker killed mid-job (SIGKILL) loses nothing, SIGTERM lets a job finish or hands it back.

The processes (tests/jobs/worker_proc.py) run pgqueuer through our PgWorker, as `outreach
serve` and `outreach worker` do, with a test handler that records each start and end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from outreach.jobs import enqueue, payload_bytes
from tests.support import migrated_database

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def dsn(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with migrated_database("postgresql", tmp_path_factory.mktemp("procs")) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "CREATE TABLE test_job_runs (tag text, pid int, phase text, "
                "at timestamptz DEFAULT clock_timestamp())"
            )
        finally:
            await conn.close()
        yield url


class Proc:
    def __init__(self, dsn: str, heartbeat: float, stop_timeout: float) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.jobs.worker_proc",
                dsn,
                str(heartbeat),
                str(stop_timeout),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.strip() == "ready", line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


async def runs(dsn: str, tag: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, phase FROM test_job_runs WHERE tag = $1 ORDER BY at", tag
        )
    finally:
        await conn.close()
    return [(r["pid"], r["phase"]) for r in rows]


async def queued(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE entrypoint = 'test.slow'")
    finally:
        await conn.close()
    return n


async def enqueue_slow(dsn: str, tags: list[str], seconds: float) -> None:
    """In one transaction, the way the app's FastConn does it."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for tag in tags:
                # enqueue() needs a FastConn; the same statement, by pgqueuer's columns.
                await conn.execute(
                    "INSERT INTO pgqueuer (priority, entrypoint, payload, status) "
                    "VALUES (0, 'test.slow', $1, 'queued')",
                    payload_bytes({"tag": tag, "seconds": seconds}),
                )
    finally:
        await conn.close()


async def until(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            raise AssertionError("not in time")
        await asyncio.sleep(0.05)


async def test_two_processes_run_each_job_once(dsn: str, procs: list[Proc]) -> None:
    procs += [Proc(dsn, 30, 5), Proc(dsn, 30, 5)]
    batch = uuid.uuid4().hex[:8]
    tags = [f"{batch}-{n}" for n in range(300)]
    await enqueue_slow(dsn, tags, 0.005)

    async def drained() -> bool:
        return await queued(dsn) == 0

    await until(drained, 60)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tag, pid, phase FROM test_job_runs WHERE tag LIKE $1", f"{batch}-%"
        )
    finally:
        await conn.close()
    starts = [r["tag"] for r in rows if r["phase"] == "start"]
    assert sorted(starts) == sorted(tags)  # each once
    assert {r["pid"] for r in rows} == {p.pid for p in procs}  # both took a share


async def test_a_worker_killed_mid_job_loses_nothing(dsn: str, procs: list[Proc]) -> None:
    procs += [Proc(dsn, 2, 5), Proc(dsn, 2, 5)]
    tag = uuid.uuid4().hex
    await enqueue_slow(dsn, [tag], 1.5)

    async def started() -> bool:
        return len(await runs(dsn, tag)) >= 1

    await until(started, 10)
    first_pid = (await runs(dsn, tag))[0][0]
    os.kill(first_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    async def finished() -> bool:
        return any(phase == "end" for _, phase in await runs(dsn, tag))

    # Taken over once its heartbeat is older than the timeout (2 s here; 30 s in service).
    await until(finished, 15)
    seen = await runs(dsn, tag)
    other = ({p.pid for p in procs} - {first_pid}).pop()
    assert seen == [(first_pid, "start"), (other, "start"), (other, "end")]
    assert time.monotonic() - killed_at >= 2 - 0.5

    async def done() -> bool:
        return await queued(dsn) == 0

    await until(done, 5)


async def test_sigterm_lets_a_running_job_finish(dsn: str, procs: list[Proc]) -> None:
    procs.append(Proc(dsn, 30, 10))
    tag = uuid.uuid4().hex
    await enqueue_slow(dsn, [tag], 1.5)

    async def started() -> bool:
        return len(await runs(dsn, tag)) >= 1

    await until(started, 10)
    procs[0].proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(procs[0].proc.wait, 15) == 0
    assert await runs(dsn, tag) == [(procs[0].pid, "start"), (procs[0].pid, "end")]
    assert await queued(dsn) == 0


async def test_sigterm_hands_back_a_job_that_would_outlast_the_drain(
    dsn: str, procs: list[Proc]
) -> None:
    procs.append(Proc(dsn, 30, 0.5))
    tag = uuid.uuid4().hex
    await enqueue_slow(dsn, [tag], 3)

    async def started() -> bool:
        return len(await runs(dsn, tag)) >= 1

    await until(started, 10)
    stopping = time.monotonic()
    procs[0].proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(procs[0].proc.wait, 15) == 0
    assert time.monotonic() - stopping < 5
    assert await queued(dsn) == 1  # back in the queue, not lost, not failed

    # Another worker runs it at once: no 30 s heartbeat timeout to wait for.
    procs.append(Proc(dsn, 30, 5))

    async def finished() -> bool:
        return any(phase == "end" for _, phase in await runs(dsn, tag))

    await until(finished, 10)
    assert [phase for _, phase in await runs(dsn, tag)] == ["start", "start", "end"]


async def test_enqueue_on_the_apps_connection_is_the_same_row(dsn: str, procs: list[Proc]) -> None:
    """The statement enqueue() runs (here on a FastDB) is worked by pgqueuer like ours above."""
    from outreach.config import Settings
    from outreach.db.base import make_engine
    from outreach.db.fast import make_fastdb

    settings = Settings(database_url=dsn, app_env="test")
    engine = make_engine(settings)
    fastdb = make_fastdb(engine, settings.sqlalchemy_url, 2)
    await fastdb.open()
    try:
        procs.append(Proc(dsn, 30, 5))
        tag = uuid.uuid4().hex
        await enqueue(fastdb, "test.slow", {"tag": tag, "seconds": 0})

        async def finished() -> bool:
            return any(phase == "end" for _, phase in await runs(dsn, tag))

        await until(finished, 10)
    finally:
        await fastdb.close()
        await engine.dispose()
