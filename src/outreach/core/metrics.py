"""Prometheus metrics (API.md section 6b). Created once per process; labels are templates only."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
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
            registry=registry,
        )
        # Per pool: `asyncpg` serves the public writes and the lists, `sqlalchemy` the other
        # admin routes (docs/operations.md, "Connections"). Set at each scrape.
        self.db_pool_size = Gauge(
            "outreach_db_pool_size",
            "Database connections open in the pool",
            ["pool"],
            registry=registry,
        )
        self.db_pool_checked_out = Gauge(
            "outreach_db_pool_checked_out",
            "Database connections in use",
            ["pool"],
            registry=registry,
        )
        self.db_pool_waiters = Gauge(
            "outreach_db_pool_waiters",
            "Requests waiting for a database connection",
            ["pool"],
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
            registry=registry,
        )
        self.jobs_oldest = Gauge(
            "outreach_jobs_oldest_age_seconds",
            "Age of the oldest job not done (first queued, retries included), by kind",
            ["kind"],
            registry=registry,
        )
        self.jobs_failed = Gauge(
            "outreach_jobs_failed",
            "Jobs given up after their retries and kept, by kind",
            ["kind"],
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
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    """The process's metrics, made on first use (prometheus_client's registry is global)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics
