"""What a job is, how it is retried, and which handler works each kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The id of the job whose handler is running in this task (None outside a job): a job taken
# over after its worker died has the same id, a twin queued by a fan-out run twice another
# (mail/mailer.py tells the two apart by it).
running_job: ContextVar[int | None] = ContextVar("running_job", default=None)


class RetryLater(Exception):  # noqa: N818 - a request, not an error of ours
    """Raised by a handler: try again per the kind's schedule. `reason` is logged and kept
    with the job, so it must name no person (no address, no message text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GiveUp(Exception):  # noqa: N818
    """Raised by a handler: this job can never succeed (a permanent refusal); it is kept as
    failed now, without the remaining retries. `reason` as for RetryLater."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a failed attempt is tried again.

    `delays[n]` seconds after the (n+1)-th failed attempt; once they are used up, every
    `then` seconds while the job is younger than `until` seconds (counted from its first
    enqueue, so an attempt cut short by a shutdown never shortens the total); after that,
    or with no `then`, the job is failed and kept.
    """

    delays: tuple[float, ...]
    then: float | None = None
    until: float = 0.0

    def delay_after(self, attempt: int, age_seconds: float) -> float | None:
        """The wait before the next attempt after `attempt` (1 = the first) failed; None:
        give up."""
        if attempt <= len(self.delays):
            return self.delays[attempt - 1]
        if self.then is not None and age_seconds < self.until:
            return self.then
        return None

    def total_seconds(self) -> float:
        """How long a job that always fails is tried, at least."""
        return max(sum(self.delays), self.until if self.then is not None else 0.0)


# API.md section 12: about 5 s, 30 s, 2 min, 10 min, then every 30 min for at least 24 h.
MAIL_SCHEDULE = Schedule((5, 30, 120, 600), then=1800, until=24 * 3600)
# API.md section 13, for the webhooks built on this package.
WEBHOOK_SCHEDULE = Schedule((5, 300, 1800, 7200, 18000, 36000, 36000))


@dataclass(frozen=True, slots=True)
class Job:
    """A job as its handler sees it."""

    id: int  # the same on every attempt
    kind: str
    payload: dict[str, Any]
    attempt: int  # 1 on the first run
    enqueued_at: datetime  # when it was first queued (UTC)


Handler = Callable[[Job], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Entry:
    handler: Handler
    schedule: Schedule


class Registry:
    """Handlers by job kind. A worker picks only the kinds registered here."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def add(self, kind: str, handler: Handler, schedule: Schedule) -> None:
        if kind in self._entries:
            raise ValueError(f"a handler for job kind {kind!r} is registered already")
        self._entries[kind] = Entry(handler, schedule)

    def handler(self, kind: str, schedule: Schedule) -> Callable[[Handler], Handler]:
        """Decorator form of `add`."""

        def register(handler: Handler) -> Handler:
            self.add(kind, handler, schedule)
            return handler

        return register

    def get(self, kind: str) -> Entry | None:
        return self._entries.get(kind)

    def kinds(self) -> Sequence[str]:
        return tuple(self._entries)
