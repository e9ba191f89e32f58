"""Background jobs: queued in the transaction of the change that causes them, worked by
every replica, each job by one worker at a time, retried on our schedule (docs/adr/0009).

PostgreSQL: pgqueuer's table and QueueManager (LISTEN/NOTIFY wake-ups, `FOR UPDATE SKIP
LOCKED`, heartbeats). SQLite, the embedded default: the same handlers polled from our `jobs`
table in the process (README: what that does not promise).

Enqueue, in the caller's transaction::

    from outreach.jobs import enqueue
    await enqueue(conn, "webhook.deliver", {"deliveryId": "7266…"}, delay_seconds=0)

`conn` is a FastConn (db/fast.py: the hot path, asyncpg; a FastDB itself commits the job
alone) or the request's ORM AsyncSession (the job joins its transaction). A payload is JSON
of ids and flags, never personal data: handlers read the rows they need when they run. For a
grouped statement (db/batch.py) that must enqueue in the same statement, `job_insert` builds
the INSERT (a data-modifying CTE on PostgreSQL, `Grouped(also=...)` on SQLite); see
inquiries/repository.py.

Handle::

    registry.add("webhook.deliver", deliver, WEBHOOK_SCHEDULE)

    async def deliver(job: Job) -> None:   # job.id, .kind, .payload, .attempt (1..), .enqueued_at
        ...                                # return: done (the job is deleted)
        raise RetryLater("endpoint answered 503")   # again after the schedule's next delay
        raise GiveUp("endpoint deleted")            # failed now, kept

Any other exception is retried like RetryLater (and logged with its trace). Past its
schedule a job is failed and kept (`status = 'failed'`). Delivery is at least once: a worker
killed mid-job leaves it to be run again (after the heartbeat timeout, 30 s), so a handler
must be idempotent (mail/: a key per mail). Reasons are logged and stored: name no person.

Work: `make_worker(...)` (worker.py); `outreach serve` runs one per process (State.jobs,
started and stopped by the lifespan), `outreach worker` runs one alone. `stats()` and
`purge()` feed the metrics and the hourly purge.
"""

from outreach.jobs.queue import LEAF, KindStats, enqueue, job_insert, payload_bytes, purge, stats
from outreach.jobs.registry import (
    MAIL_SCHEDULE,
    WEBHOOK_SCHEDULE,
    GiveUp,
    Handler,
    Job,
    Registry,
    RetryLater,
    Schedule,
)
from outreach.jobs.worker import PgWorker, SqliteWorker, Worker, make_worker

__all__ = [
    "LEAF",
    "MAIL_SCHEDULE",
    "WEBHOOK_SCHEDULE",
    "GiveUp",
    "Handler",
    "Job",
    "KindStats",
    "PgWorker",
    "Registry",
    "RetryLater",
    "Schedule",
    "SqliteWorker",
    "Worker",
    "enqueue",
    "job_insert",
    "make_worker",
    "payload_bytes",
    "purge",
    "stats",
]
