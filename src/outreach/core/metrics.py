"""Prometheus metrics (API.md section 6b). Created once per process; labels are templates only.

One process (`outreach serve`, `make run`): the values live in the process's registry, as
prometheus_client keeps them. Several worker processes (`serve --workers N`, N > 1): the
command sets PROMETHEUS_MULTIPROC_DIR before the workers start, so prometheus_client keeps
each value in a per-process mmap file there, and `/metrics` (whichever worker answers)
merges every worker's files: counters and histograms are the pod's totals (a worker that
died still counts), the gauges say in their `multiprocess_mode` how they merge, and the
process metrics are summed over the live workers (PodProcessCollector). docs/operations.md,
"Metrics with several workers".
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        # None: one process, its own registry. A folder: every worker's values (see above).
        self.multiprocess_dir = multiprocess_dir()
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration by route template",
            ["method", "route"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.inquiries_submitted = Counter(
            "outreach_inquiries_submitted_total",
            "Inquiries stored through the public submit route",
            registry=registry,
        )
        self.inquiries_blocked = Counter(
            "outreach_inquiries_blocked_total",
            "Public submits stored as spam instead (honeypot, blocklist)",
            ["reason"],
            registry=registry,
        )
        self.subscriber_events = Counter(
            "outreach_subscriber_events_total",
            "Subscriptions and unsubscriptions",
            ["event"],
            registry=registry,
        )
        self.realtime_emit_failures = Counter(
            "outreach_realtime_emit_failures_total",
            "Realtime events that could not be published",
            registry=registry,
        )
        self.realtime_clients = Gauge(
            "outreach_realtime_connected_clients",
            "Socket.IO clients connected to this process",
            multiprocess_mode="livesum",
            registry=registry,
        )
        # Per pool: `asyncpg` serves the public writes and the lists, `sqlalchemy` the other
        # admin routes (docs/operations.md, "Connections"). Set at each scrape.
        self.db_pool_size = Gauge(
            "outreach_db_pool_size",
            "Database connections open in the pool",
            ["pool"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.db_pool_checked_out = Gauge(
            "outreach_db_pool_checked_out",
            "Database connections in use",
            ["pool"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.db_pool_waiters = Gauge(
            "outreach_db_pool_waiters",
            "Requests waiting for a database connection",
            ["pool"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.inquiry_blocked = {
            reason: self.inquiries_blocked.labels(reason=reason)
            for reason in ("honeypot", "blocklist")
        }
        # Jobs (jobs/): attempts as they end, and the queue as the database holds it (the
        # gauges are set at each scrape, the same on every replica: alert on max()).
        self.job_runs = Counter(
            "outreach_job_runs_total",
            "Job attempts by kind and outcome (ok, retry, failed)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.jobs_queued = Gauge(
            "outreach_jobs_queued",
            "Jobs waiting, running or waiting for a retry, by kind",
            ["kind"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.jobs_oldest = Gauge(
            "outreach_jobs_oldest_age_seconds",
            "Age of the oldest job not done (first queued, retries included), by kind",
            ["kind"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.jobs_failed = Gauge(
            "outreach_jobs_failed",
            "Jobs given up after their retries and kept, by kind",
            ["kind"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        # Mail (API.md section 12): kind is inquiry-notify, inquiry-ack or subscribe-confirm.
        self.mail_sent = Counter(
            "outreach_mail_sent_total",
            "Mails accepted by the SMTP server (or written to the development outbox)",
            ["kind"],
            registry=registry,
        )
        self.mail_failures = Counter(
            "outreach_mail_failures_total",
            "Mail delivery attempts that failed (each retry counts)",
            ["kind"],
            registry=registry,
        )
        self.mail_limited = Counter(
            "outreach_mail_limited_total",
            "Mails not sent because the address had its share (10 min / 24 h limits)",
            ["kind"],
            registry=registry,
        )
        self.mail_queue_depth = Gauge(
            "outreach_mail_queue_depth",
            "Mails waiting to be sent, retries included",
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "outreach_webhook_deliveries_total",
            "Webhook delivery attempts by result (dropped: its endpoint was gone first)",
            ["result"],
            registry=registry,
        )
        self.webhook_delivery = {
            result: self.webhook_deliveries.labels(result=result)
            for result in ("succeeded", "failed", "dropped")
        }
        # Each label's child once: `labels()` per event costs a lock and a lookup.
        self.subscriber_event = {
            event: self.subscriber_events.labels(event=event)
            for event in ("subscribed", "unsubscribed")
        }

    def render(self) -> tuple[bytes, str]:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        # A fresh registry per scrape, as prometheus_client's multiprocess mode asks: the
        # merge of every worker's files, and the process metrics of the live workers.
        registry = CollectorRegistry()
        registry.register(MultiProcessCollector(self.multiprocess_dir))
        registry.register(PodProcessCollector(self.multiprocess_dir))
        return generate_latest(registry), CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    """The folder of prometheus_client's multiprocess mode, when it is on in this process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class MultiProcessCollector:
    """prometheus_client's merge of the workers' files (imported only in that mode)."""

    def __init__(self, path: str) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector as Merge

        self._merge = Merge(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        return self._merge.collect()  # type: ignore[no-untyped-call,no-any-return]


_PID_FILE = re.compile(r"_(\d+)\.db$")


def pids_with_files(path: str) -> set[int]:
    """The processes that have written values in `path` (their files are named by pid)."""
    pids: set[int] = set()
    for name in glob.glob(os.path.join(path, "*.db")):
        found = _PID_FILE.search(name)
        if found:
            pids.add(int(found.group(1)))
    return pids


def live_worker_pids(path: str) -> list[int]:
    """The processes with files in `path` that are still running (on this host's pids)."""
    live = []
    for pid in sorted(pids_with_files(path)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # alive, another user's: not ours to read, but alive
            pass
        live.append(pid)
    return live


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


class PodProcessCollector:
    """The `process_*` metrics of API.md 6b for the whole pod: each worker's (read from
    /proc, as ProcessCollector does) summed over the live workers; the start time is the
    oldest worker's, the fd limit the lowest. Without /proc (macOS), none, as upstream."""

    SUMMED = (
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_open_fds",
    )

    def __init__(self, path: str) -> None:
        self._path = path

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, float] = {}
        cpu = 0.0
        starts: list[float] = []
        limits: list[float] = []
        workers = 0
        for pid in live_worker_pids(self._path):
            collector = ProcessCollector(pid=_constant(pid), registry=None)
            seen = False
            for family in collector.collect():
                for sample in family.samples:
                    seen = True
                    if sample.name in self.SUMMED:
                        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
                    elif sample.name == "process_cpu_seconds_total":
                        cpu += sample.value
                    elif sample.name == "process_start_time_seconds":
                        starts.append(sample.value)
                    elif sample.name == "process_max_fds":
                        limits.append(sample.value)
            workers += seen
        if not workers:
            return
        helps = {
            "process_virtual_memory_bytes": "Virtual memory size in bytes",
            "process_resident_memory_bytes": "Resident memory size in bytes",
            "process_open_fds": "Number of open file descriptors",
        }
        for name, value in totals.items():
            yield GaugeMetricFamily(name, f"{helps[name]}, summed over the workers", value=value)
        yield CounterMetricFamily(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds, summed over the live workers",
            value=cpu,
        )
        if starts:
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the oldest live worker since unix epoch in seconds",
                value=min(starts),
            )
        if limits:
            yield GaugeMetricFamily(
                "process_max_fds", "Maximum number of open file descriptors", value=min(limits)
            )
        yield GaugeMetricFamily(
            "outreach_workers", "Worker processes of this pod that are alive", value=workers
        )


_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    """The process's metrics, made on first use (prometheus_client's registry is global)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics
