"""The mailer: builds a message, keeps the per-address limits, delivers it once.

`Mailer.send(mail)` is called by a job handler (the domains' jobs.py). Before anything goes
out, one transaction decides on the mail by its `key`: already sent (a job run twice):
nothing; over the limits of its address (at most once per 10 minutes and 5 times per 24 h
for each kind that has them): recorded as limited, nothing sent; else reserved (it counts
from now). Then SMTP. A failure raises RetryLater (the job's schedule retries it, the
reservation is kept so the retry is not limited) or GiveUp for a refusal for good. The
decision locks a row per (kind, address) first, so two replicas deciding about one address
take turns: the limits hold whatever the number of requests and workers. The job that goes
claims the mail for its attempt (`claimed_by`, `claimed_until`): a twin job for the same
key (a fan-out run twice after a crash) meanwhile is told to retry and then finds it sent,
while the same job taken over after its worker died may go again at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from typing import Any, Literal

import structlog
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from outreach.config import Settings
from outreach.core.metrics import Metrics
from outreach.db.base import table_of, utcnow
from outreach.db.fast import FastDB
from outreach.jobs import GiveUp, RetryLater
from outreach.jobs.registry import running_job
from outreach.mail.models import MailLimit, MailLog
from outreach.mail.transport import (
    SEND_TIMEOUT,
    OutboxTransport,
    Permanent,
    SmtpTransport,
    SmtpUrl,
    Transport,
    error_reason,
)

log = structlog.get_logger("outreach.mail")

MIN_GAP = timedelta(minutes=10)
WINDOW = timedelta(hours=24)
PER_WINDOW = 5
KEEP_LOG = timedelta(days=7)

# go: this worker sends it now; sent: sent before; limited: over its address's limits;
# busy: another worker is sending it right now (a job run twice): try again later.
Decision = Literal["go", "sent", "limited", "busy"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str) -> str:
    """Header text from user input: no line breaks or control characters."""
    return _CONTROL.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class Mail:
    kind: str  # inquiry-notify | inquiry-ack | subscribe-confirm (the metrics' label)
    key: str  # names this mail: the same on a retry and for a job that runs twice
    to: str
    subject: str
    text: str
    html: str
    reply_to: Address | None = None
    limited: bool = False  # the per-address limits apply (an address a visitor typed)


class _MailPolicy(EmailPolicy):
    """email.policy.SMTP, but headers with non-ASCII text are written by email.header: the
    modern folder drops the space that falls between two encoded words (a Vietnamese
    subject came out as "lờinhắn"; tests/mail/test_mail.py reads it back byte for byte)."""

    def fold(self, name: str, value: Any) -> str:
        text = str(value)
        if text.isascii():
            folded: str = super().fold(name, value)
            return folded
        addresses = getattr(value, "addresses", None)
        if addresses is not None:
            rendered = ", ".join(self._address(name, a) for a in addresses)
        else:
            rendered = Header(text, "utf-8", header_name=name).encode(linesep=self.linesep)
        return f"{name}: {rendered}{self.linesep}"

    def fold_binary(self, name: str, value: Any) -> bytes:
        if str(value).isascii():
            folded: bytes = super().fold_binary(name, value)
            return folded
        return self.fold(name, value).encode("ascii")

    def _address(self, name: str, address: Address) -> str:
        if address.display_name.isascii():
            return formataddr((address.display_name, address.addr_spec))
        encoded = Header(address.display_name, "utf-8", header_name=name).encode(
            linesep=self.linesep
        )
        return f"{encoded} <{address.addr_spec}>"


MAIL_POLICY = _MailPolicy(linesep="\r\n")  # SMTP's own settings: CRLF, 78-column lines


def address_hash(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


_log = table_of(MailLog)
_lock = table_of(MailLimit)


def _lock_stmt(insert: Any) -> Any:
    stmt = insert(_lock).values(
        kind=bindparam("p_kind"), address_hash=bindparam("p_hash"), touched_at=bindparam("p_now")
    )
    return stmt.on_conflict_do_update(
        index_elements=["kind", "address_hash"], set_={"touched_at": stmt.excluded.touched_at}
    )


_LOCK = {"postgresql": _lock_stmt(postgresql.insert), "sqlite": _lock_stmt(sqlite.insert)}
_FIND = select(_log.c.status, _log.c.claimed_by, _log.c.claimed_until).where(
    _log.c.key == bindparam("p_key")
)
# A worker about to hand a reserved mail to SMTP claims it for this long: longer than one
# attempt can take (transport.SEND_TIMEOUT), so a claim lapses only when its worker is gone.
CLAIM = timedelta(seconds=SEND_TIMEOUT * 2)
NO_CLAIM: dict[str, Any] = {"p_by": None, "p_until": None}
_CLAIM = (
    update(_log)
    .where(_log.c.key == bindparam("p_key"))
    .values(claimed_by=bindparam("p_by"), claimed_until=bindparam("p_until"))
)
_RECENT = select(_log.c.created_at).where(
    _log.c.kind == bindparam("p_kind"),
    _log.c.address_hash == bindparam("p_hash"),
    _log.c.created_at > bindparam("p_since"),
    _log.c.status != "limited",
)
_RECORD = _log.insert().values(
    key=bindparam("p_key"),
    kind=bindparam("p_kind"),
    address_hash=bindparam("p_hash"),
    status=bindparam("p_status"),
    created_at=bindparam("p_now"),
    claimed_by=bindparam("p_by"),
    claimed_until=bindparam("p_until"),
)
_SENT = (
    update(_log)
    .where(_log.c.key == bindparam("p_key"))
    .values(
        status="sent",
        sent_at=bindparam("p_now"),
        message_id=bindparam("p_message_id"),
        claimed_by=None,
        claimed_until=None,
    )
)
_PURGE = (
    delete(_log).where(_log.c.created_at < bindparam("p_before")),
    delete(_lock).where(_lock.c.touched_at < bindparam("p_before")),
)


def make_transport(settings: Settings) -> Transport:
    if settings.smtp_url is not None:
        return SmtpTransport(SmtpUrl.parse(settings.smtp_url.get_secret_value()))
    return OutboxTransport(settings.var_dir / "outbox")


class Mailer:
    def __init__(
        self,
        settings: Settings,
        fastdb: FastDB,
        metrics: Metrics,
        transport: Transport | None = None,
    ) -> None:
        self._settings = settings
        self._db = fastdb
        self._metrics = metrics
        self.transport = transport or make_transport(settings)
        sender = parseaddr(settings.mail_from)[1]
        self._sender = sender
        self._domain = sender.rpartition("@")[2] or "localhost"

    async def send(self, mail: Mail) -> Decision:
        """Deliver `mail` once, within its address's limits; RetryLater/GiveUp on failure."""
        decision = await self._decide(mail)
        if decision == "limited":
            self._metrics.mail_limited.labels(kind=mail.kind).inc()
            log.info("Mail not sent: address limit", kind=mail.kind, mailKey=mail.key)
            return decision
        if decision == "sent":
            return decision
        if decision == "busy":
            raise RetryLater("another worker is sending this mail")
        message = self.build(mail)
        started = time.monotonic()
        try:
            await self.transport.send(message, self._sender, mail.to)
        except Permanent as exc:
            self._metrics.mail_failures.labels(kind=mail.kind).inc()
            await self._release(mail)
            raise GiveUp(f"SMTP refused the mail for good ({exc.code})") from None
        except Exception as exc:  # noqa: BLE001 - every other failure is worth a retry
            self._metrics.mail_failures.labels(kind=mail.kind).inc()
            await self._release(mail)
            raise RetryLater(f"SMTP: {error_reason(exc)}") from None
        message_id = str(message["Message-ID"])
        await self._db.execute(
            _SENT, {"p_key": mail.key, "p_now": utcnow(), "p_message_id": message_id}
        )
        self._metrics.mail_sent.labels(kind=mail.kind).inc()
        log.info(
            "Mail sent",
            kind=mail.kind,
            mailKey=mail.key,
            messageId=message_id,
            ms=round((time.monotonic() - started) * 1000),
        )
        return "go"

    async def _decide(self, mail: Mail) -> Decision:
        now = utcnow()
        job = running_job.get()
        me = None if job is None else str(job)
        keys = {"p_kind": mail.kind, "p_hash": address_hash(mail.to)}
        async with self._db.transaction() as conn:
            # First: the lock row of this address and kind (held to the commit).
            await conn.execute(_LOCK[conn.dialect], {**keys, "p_now": now})
            found = await conn.fetchrow(_FIND, {"p_key": mail.key})
            if found is not None:
                status = found["status"]
                if status != "reserved":
                    return "sent" if status == "sent" else "limited"
                until = found["claimed_until"]
                if until is not None and until > now and (me is None or found["claimed_by"] != me):
                    return "busy"  # another job is sending it (not this one, taken over)
                await conn.execute(_CLAIM, {"p_key": mail.key, "p_by": me, "p_until": now + CLAIM})
                return "go"
            status = "reserved"
            if mail.limited:
                recent = [
                    row["created_at"]
                    for row in await conn.fetch(_RECENT, {**keys, "p_since": now - WINDOW})
                ]
                if len(recent) >= PER_WINDOW or any(at > now - MIN_GAP for at in recent):
                    status = "limited"
            claim = {"p_by": me, "p_until": now + CLAIM} if status == "reserved" else NO_CLAIM
            await conn.execute(
                _RECORD, {**keys, "p_key": mail.key, "p_status": status, "p_now": now, **claim}
            )
        return "go" if status == "reserved" else "limited"

    async def _release(self, mail: Mail) -> None:
        """The attempt failed: its claim goes, so the retry (or a twin job) may send."""
        with contextlib.suppress(Exception):  # a claim left behind lapses by itself
            await self._db.execute(_CLAIM, {"p_key": mail.key, **NO_CLAIM})

    def build(self, mail: Mail) -> EmailMessage:
        """UTF-8 multipart text + HTML with a Message-ID (API.md section 12)."""
        message = EmailMessage(policy=MAIL_POLICY)
        message["From"] = self._settings.mail_from
        message["To"] = mail.to
        message["Subject"] = one_line(mail.subject)
        message["Date"] = format_datetime(utcnow(), usegmt=True)
        message["Message-ID"] = make_msgid(domain=self._domain)
        if mail.reply_to is not None:
            message["Reply-To"] = mail.reply_to
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
        message.set_content(mail.text, subtype="plain", charset="utf-8", cte="quoted-printable")
        message.add_alternative(mail.html, subtype="html", charset="utf-8", cte="quoted-printable")
        return message

    async def purge(self) -> None:
        before = utcnow() - KEEP_LOG
        for stmt in _PURGE:
            await self._db.execute(stmt, {"p_before": before})


def visitor_address(name: str, email: str) -> Address:
    """The visitor as a Reply-To: their name (one line) and address."""
    local, _, domain = email.rpartition("@")
    return Address(display_name=one_line(name), username=local, domain=domain)
