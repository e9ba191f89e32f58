"""A worker process for tests/jobs/test_processes.py: a PgWorker with one test handler.

    python -m tests.jobs.worker_proc DSN HEARTBEAT_SECONDS STOP_TIMEOUT_SECONDS

`test.slow` jobs ({"tag", "seconds"}) write a `start` row into test_job_runs, sleep, then an
`end` row. SIGTERM stops the worker as `outreach serve` does: running jobs get
STOP_TIMEOUT_SECONDS to finish, then are handed back. Prints `ready` once it takes jobs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import asyncpg

from outreach.core.logging import configure_logging
from outreach.jobs import Job, PgWorker, Registry, Schedule


async def main(dsn: str, heartbeat: float, stop_timeout: float) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)

    async def slow(job: Job) -> None:
        tag = job.payload["tag"]
        await pool.execute(
            "INSERT INTO test_job_runs (tag, pid, phase) VALUES ($1, $2, 'start')", tag, os.getpid()
        )
        await asyncio.sleep(float(job.payload["seconds"]))
        await pool.execute(
            "INSERT INTO test_job_runs (tag, pid, phase) VALUES ($1, $2, 'end')", tag, os.getpid()
        )

    registry = Registry()
    registry.add("test.slow", slow, Schedule((0.2,)))
    worker = PgWorker(dsn, registry, heartbeat_timeout=heartbeat, poll_seconds=0.5)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    await worker.wait_started()
    print("ready", flush=True)  # noqa: T201 - the parent test waits for it
    await stop.wait()
    worker.begin_stop()
    await worker.stop(stop_timeout)
    await pool.close()


if __name__ == "__main__":
    configure_logging("warning", "logfmt")
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
