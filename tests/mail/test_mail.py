"""Inquiry mails (API.md section 12) through a real SMTP server, on PostgreSQL and SQLite:
what arrives, byte for byte where it matters; who gets nothing; the per-address limits;
SMTP down, refusing, or with a certificate nobody vouches for."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from outreach.config import Settings
from outreach.db.base import utcnow
from outreach.mail import OutboxTransport, SmtpTransport, SmtpUrl, address_hash
from outreach.mail.mailer import make_transport
from tests.mail.conftest import MAIL_FROM, staff_address
from tests.mail.support import SmtpServer, self_signed
from tests.support import BASE, Api, unique_email

SUBMIT = f"{BASE}/inquiries/submit"
NAME = "Nguyễn Thị Ánh Dương"
SUBJECT = "Hỏi giá sỉ — đơn 50 hộp"
MESSAGE = "Xin chào,\ntôi muốn đặt 50 hộp trà <b>Ô Long</b> & giao ở Đà Nẵng.\nCảm ơn!"


@pytest.fixture
def staff(mail_api: Api, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """This test's own staff addresses, and the visitor acknowledgment on."""
    addresses = [staff_address(), staff_address()]
    monkeypatch.setattr(mail_api.settings, "inquiry_notify_to", addresses)
    monkeypatch.setattr(mail_api.settings, "inquiry_ack", True)
    return addresses


async def submit(api: Api, email: str, **extra: Any) -> str:
    headers = extra.pop("headers", None)
    body = {"name": NAME, "email": email, "message": MESSAGE, "subject": SUBJECT, **extra}
    response = await api.client.post(SUBMIT, json=body, headers=headers)
    assert response.status_code == 201, response.text
    inquiry_id: str = response.json()["id"]
    return inquiry_id


async def queued(api: Api) -> list[dict[str, Any]]:
    """Every job in the queue: kind, status, attempts."""
    if api.state.fastdb.dialect == "postgresql":
        sql = "SELECT entrypoint AS kind, status::text AS status, attempts FROM pgqueuer"
    else:
        sql = "SELECT kind, status, attempts FROM jobs"
    async with api.state.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(text(sql))]


async def idle(api: Api, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while any(j["status"] != "failed" for j in await queued(api)):
        assert time.monotonic() < deadline, await queued(api)
        await asyncio.sleep(0.1)


def metric(body: str, name: str, **labels: str) -> float:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + (f"{{{inner}}}" if labels else "")) + r" ([0-9.e+-]+)"
    found = re.search(pattern, body)
    return float(found.group(1)) if found else 0.0


# ---- what arrives ------------------------------------------------------------------------------


async def test_a_sent_inquiry_mails_each_staff_address_and_the_visitor(
    mail_api: Api, smtp: SmtpServer, staff: list[str]
) -> None:
    visitor = unique_email("khach")
    started = time.time()
    inquiry_id = await submit(mail_api, visitor, phone="+84 901 234 567")

    for address in staff:
        (mail,) = await smtp.wait_for(address)
        assert mail.at - started < 10, "sent within 10 s of the commit"
        assert mail.mail_from == "shop@lan.example"
        assert mail.rcpt_tos == [address]
        # Headers on the wire: UTF-8 words (RFC 2047) decode to the exact Vietnamese.
        assert mail.header("From") == MAIL_FROM
        assert mail.raw_header("From").endswith(b" <shop@lan.example>")
        assert mail.raw_header("To") == address.encode()
        assert mail.header("Subject") == f"[Cửa hàng Lan] Liên hệ mới từ {NAME}: {SUBJECT}"
        assert mail.raw_header("Subject").isascii()
        assert mail.header("Reply-To") == f"{NAME} <{visitor}>"
        assert re.fullmatch(rb"<[^<>@\s]+@lan\.example>", mail.raw_header("Message-ID"))
        assert mail.raw_header("MIME-Version") == b"1.0"
        assert mail.raw_header("Content-Type").startswith(b"multipart/alternative;")
        assert mail.raw_header("Auto-Submitted") == b"auto-generated"
        assert b'Content-Type: text/plain; charset="utf-8"\r\n' in mail.raw
        assert b'Content-Type: text/html; charset="utf-8"\r\n' in mail.raw
        assert mail.raw.isascii()  # 7-bit on the wire: any server takes it
        # The text part carries the inquiry exactly, the HTML part escaped (never markup).
        plain = mail.part("plain")
        for value in (NAME, visitor, "+84 901 234 567", SUBJECT, MESSAGE, inquiry_id):
            assert value in plain
        html = mail.part("html")
        assert "trà &lt;b&gt;Ô Long&lt;/b&gt; &amp; giao" in html
        assert "<b>Ô Long</b>" not in html
        assert '<html lang="vi">' in html

    (ack,) = await smtp.wait_for(visitor)
    assert ack.header("Subject") == "Cửa hàng Lan đã nhận được lời nhắn của bạn"
    assert ack.message["Reply-To"] is None  # the visitor's mail needs none
    assert MESSAGE in ack.part("plain")
    assert SUBJECT in ack.part("plain")
    assert f"Xin chào {NAME}," in ack.part("plain")
    ids = [m.header("Message-ID") for m in smtp.received()]
    assert len(ids) == len(set(ids)), "a Message-ID of its own for every mail"
    await idle(mail_api)


async def test_the_acknowledgment_is_in_the_visitors_language(
    mail_api: Api, smtp: SmtpServer, staff: list[str]
) -> None:
    english = unique_email("en")
    await submit(mail_api, english, headers={"Accept-Language": "en-GB,en;q=0.9,vi;q=0.5"})
    (ack,) = await smtp.wait_for(english)
    assert ack.header("Subject") == "Cửa hàng Lan received your message"
    assert f"Hello {NAME}," in ack.part("plain")
    assert '<html lang="en">' in ack.part("html")
    # Staff get STAFF_LANGUAGE (Vietnamese by default), whatever the visitor speaks.
    (notify,) = await smtp.wait_for(staff[0])
    assert notify.header("Subject").startswith("[Cửa hàng Lan] Liên hệ mới")


async def test_a_honeypot_mails_nobody(mail_api: Api, smtp: SmtpServer, staff: list[str]) -> None:
    bot = unique_email("bot")
    await submit(mail_api, bot, website="http://spam.example")
    real = unique_email("real")
    await submit(mail_api, real)  # a real one after it: its mails prove the worker ran
    await smtp.wait_for(real)
    await smtp.wait_for(staff[0])
    await idle(mail_api)
    assert smtp.received(bot) == []
    assert len(smtp.received(staff[0])) == 1


async def test_without_notify_or_ack_nothing_is_queued(
    mail_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mail_api.settings, "inquiry_notify_to", [])
    monkeypatch.setattr(mail_api.settings, "inquiry_ack", False)
    await idle(mail_api)
    before = await queued(mail_api)
    await submit(mail_api, unique_email("quiet"))
    assert await queued(mail_api) == before


async def test_an_inquiry_marked_spam_before_its_mail_goes_out_is_not_mailed(
    mail_api: Api, smtp: SmtpServer, staff: list[str]
) -> None:
    # The worker is stopped: the jobs wait while staff cancel the inquiry.
    await mail_api.state.jobs.stop(5)
    try:
        visitor = unique_email("spam")
        inquiry_id = await submit(mail_api, visitor)
        changed = await mail_api.client.patch(
            f"{BASE}/inquiries/{inquiry_id}", json={"status": "CANCELLED"}, headers=mail_api.owner
        )
        assert changed.status_code == 200
    finally:
        await restart_worker(mail_api)
    await idle(mail_api)
    assert smtp.received(visitor) == []
    assert smtp.received(staff[0]) == []


async def restart_worker(api: Api) -> None:
    from outreach.jobs import make_worker

    old = api.state.jobs
    api.state.jobs = make_worker(
        api.settings.sqlalchemy_url, api.state.engine, old.registry, api.state.metrics
    )
    await api.state.jobs.start()
    await api.state.jobs.wait_started()


# ---- the limits -------------------------------------------------------------------------------


async def test_the_acknowledgment_is_sent_once_per_10_minutes_per_address(
    mail_api: Api, smtp: SmtpServer, staff: list[str]
) -> None:
    visitor = unique_email("many")
    for _ in range(4):
        await submit(mail_api, visitor)
    await smtp.wait_for(staff[0], count=4)  # staff hear of every one
    await idle(mail_api)
    assert len(smtp.received(visitor)) == 1  # the visitor once, whatever the requests


async def test_the_acknowledgment_is_sent_at_most_5_times_per_24_hours(
    mail_api: Api, smtp: SmtpServer, staff: list[str]
) -> None:
    visitor = unique_email("daily")
    # Five sent in the last day, the latest 20 minutes ago (past the 10-minute gap).
    await seed_sent(mail_api, "inquiry-ack", visitor, [23, 15, 9, 3, 0.34])
    await submit(mail_api, visitor)
    await smtp.wait_for(staff[0])
    await idle(mail_api)
    assert smtp.received(visitor) == []
    # One of the five older than 24 h: a sixth is allowed.
    other = unique_email("daily")
    await seed_sent(mail_api, "inquiry-ack", other, [25, 15, 9, 3, 0.34])
    await submit(mail_api, other)
    await smtp.wait_for(other)


async def seed_sent(api: Api, kind: str, address: str, hours_ago: list[float]) -> None:
    now = utcnow()
    async with api.state.sessionmaker() as session:
        for hours in hours_ago:
            await session.execute(
                text(
                    "INSERT INTO mail_log (key, kind, address_hash, status, created_at) "
                    "VALUES (:key, :kind, :hash, 'sent', :at)"
                ),
                {
                    "key": f"seed:{uuid.uuid4().hex}",
                    "kind": kind,
                    "hash": address_hash(address),
                    "at": (now - timedelta(hours=hours)).replace(tzinfo=None)
                    if api.state.fastdb.dialect == "sqlite"
                    else now - timedelta(hours=hours),
                },
            )
        await session.commit()


async def test_concurrent_decisions_about_one_address_take_turns(mail_api: Api) -> None:
    """Twenty workers deciding at once about one address: one goes, the rest are limited."""
    from outreach.mail import Mail

    sent: list[str] = []

    class Counting:
        async def send(self, message: Any, sender: str, recipient: str) -> None:
            del message, sender
            sent.append(recipient)

    mailer = mail_api.state.mailer
    original = mailer.transport
    mailer.transport = Counting()
    try:
        address = unique_email("race")
        mails = [
            Mail(
                "subscribe-confirm", f"race:{uuid.uuid4().hex}", address, "s", "t", "h", None, True
            )
            for _ in range(20)
        ]
        outcomes = await asyncio.gather(*(mailer.send(m) for m in mails))
    finally:
        mailer.transport = original
    assert sorted(outcomes).count("go") == 1
    assert sent == [address]


async def test_one_mail_queued_twice_is_sent_once_even_at_the_same_moment(mail_api: Api) -> None:
    """A fan-out run twice after a crash queues the same mail (same key) in two jobs that may
    run at once: the one that claims it sends; the other is told to retry and then finds it
    sent. A failed attempt gives the claim back, so its retry is not locked out."""
    from outreach.jobs import RetryLater
    from outreach.mail import Mail

    sent: list[str] = []
    failures = [OSError("connection refused")]
    release = asyncio.Event()

    class Slow:
        async def send(self, message: Any, sender: str, recipient: str) -> None:
            del message, sender
            if failures:
                raise failures.pop()
            await release.wait()  # an SMTP conversation under way
            sent.append(recipient)

    mailer = mail_api.state.mailer
    original = mailer.transport
    mailer.transport = Slow()
    try:
        address = unique_email("twin")
        mail = Mail("inquiry-ack", f"twin:{uuid.uuid4().hex}", address, "s", "t", "h", None)
        with pytest.raises(RetryLater, match="SMTP"):
            await mailer.send(mail)  # the first attempt fails: the claim is given back
        first = asyncio.create_task(mailer.send(mail))
        while not first.done() and not await _claimed(mail_api, mail.key):
            await asyncio.sleep(0.01)
        with pytest.raises(RetryLater, match="another worker is sending this mail"):
            await mailer.send(mail)  # its twin, meanwhile
        release.set()
        assert await first == "go"
        assert await mailer.send(mail) == "sent"  # the twin's retry
    finally:
        mailer.transport = original
    assert sent == [address]


async def _claimed(api: Api, key: str) -> bool:
    async with api.state.sessionmaker() as session:
        until = await session.scalar(
            text("SELECT claimed_until FROM mail_log WHERE key = :key"), {"key": key}
        )
    return until is not None


# ---- failures ----------------------------------------------------------------------------------


async def test_smtp_down_the_mail_waits_and_arrives_once_it_is_back(
    mail_api: Api, smtp: SmtpServer, staff: list[str]
) -> None:
    metrics_before = (await mail_api.client.get("/metrics")).text
    smtp.stop()
    try:
        visitor = unique_email("outage")
        await submit(mail_api, visitor)

        async def failed_once() -> bool:
            jobs = await queued(mail_api)
            return any(j["kind"] == "mail.inquiry-ack" and j["attempts"] >= 1 for j in jobs)

        deadline = time.monotonic() + 15
        while not await failed_once():
            assert time.monotonic() < deadline, await queued(mail_api)
            await asyncio.sleep(0.1)
        scrape = (await mail_api.client.get("/metrics")).text
        assert metric(scrape, "outreach_mail_queue_depth") >= 1
        assert metric(scrape, "outreach_mail_failures_total", kind="inquiry-ack") > metric(
            metrics_before, "outreach_mail_failures_total", kind="inquiry-ack"
        )
        assert metric(scrape, "outreach_jobs_queued", kind="mail.inquiry-ack") >= 1
    finally:
        smtp.start()
    # The next attempt (about 5 s after the first) finds SMTP back.
    (mail,) = await smtp.wait_for(visitor, timeout=20)
    assert mail.header("Subject") == "Cửa hàng Lan đã nhận được lời nhắn của bạn"
    for address in staff:
        assert len(await smtp.wait_for(address, timeout=20)) == 1
    await idle(mail_api)
    scrape = (await mail_api.client.get("/metrics")).text
    assert metric(scrape, "outreach_mail_queue_depth") == 0
    assert metric(scrape, "outreach_mail_sent_total", kind="inquiry-ack") >= 1


async def test_a_recipient_refused_for_good_fails_the_job_and_keeps_it(
    mail_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = staff_address()
    strict = SmtpServer(tmp_path / "strict", args=["--refuse", refused])
    strict.start()
    try:
        monkeypatch.setattr(
            mail_api.state.mailer, "transport", SmtpTransport(SmtpUrl.parse(strict.url))
        )
        monkeypatch.setattr(mail_api.settings, "inquiry_notify_to", [refused])
        monkeypatch.setattr(mail_api.settings, "inquiry_ack", False)
        await submit(mail_api, unique_email("x"))
        deadline = time.monotonic() + 15
        while not [j for j in await queued(mail_api) if j["kind"] == "mail.inquiry-notify"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await idle(mail_api)
        failed = [j for j in await queued(mail_api) if j["kind"] == "mail.inquiry-notify"]
        # Failed at the first refusal, not retried (a 550 does not change), and kept.
        assert [(j["status"], j["attempts"]) for j in failed][-1:] == [("failed", 0)]
        scrape = (await mail_api.client.get("/metrics")).text
        assert metric(scrape, "outreach_jobs_failed", kind="mail.inquiry-notify") >= 1
    finally:
        strict.stop()
        await clear_failed(mail_api)


async def clear_failed(api: Api) -> None:
    table = "pgqueuer" if api.state.fastdb.dialect == "postgresql" else "jobs"
    async with api.state.engine.begin() as conn:
        await conn.execute(text(f"DELETE FROM {table} WHERE status = 'failed'"))


async def test_tls_certificates_are_verified(
    mail_api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    tls = SmtpServer(tmp_path / "tls", args=["--tls", str(cert), str(key)])
    tls.start()
    try:
        monkeypatch.setattr(mail_api.settings, "inquiry_notify_to", [])
        monkeypatch.setattr(mail_api.settings, "inquiry_ack", True)
        # smtp://host:port: STARTTLS since the server offers it, against the system's CAs.
        monkeypatch.setattr(
            mail_api.state.mailer, "transport", SmtpTransport(SmtpUrl.parse(tls.url))
        )
        untrusted = unique_email("tls")
        await submit(mail_api, untrusted)
        deadline = time.monotonic() + 15
        while not any(j["attempts"] >= 1 for j in await queued(mail_api)):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert tls.received(untrusted) == [], "sent over a connection nobody verified"

        # Trusting the certificate (SSL_CERT_FILE, as an operator would) lets the retry go.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        monkeypatch.setattr(
            mail_api.state.mailer, "transport", SmtpTransport(SmtpUrl.parse(tls.url))
        )
        (mail,) = await tls.wait_for(untrusted, timeout=20)
        assert mail.tls
    finally:
        tls.stop()


# ---- the transports and settings ---------------------------------------------------------------


async def test_without_smtp_url_mails_go_to_the_outbox_as_eml_files(tmp_path: Path) -> None:
    settings = Settings(app_env="development", var_dir=tmp_path, mail_from=MAIL_FROM)
    transport = make_transport(settings)
    assert isinstance(transport, OutboxTransport)
    assert transport.directory == tmp_path / "outbox"
    from email import message_from_bytes
    from email.policy import default

    from outreach.core.metrics import get_metrics
    from outreach.mail import Mail, Mailer

    mailer = Mailer(settings, None, get_metrics(), transport)  # type: ignore[arg-type]
    message = mailer.build(
        Mail("inquiry-ack", "k", "a@example.com", "Chào bạn", "Văn bản", "<p>x</p>")
    )
    await transport.send(message, "shop@lan.example", "a@example.com")
    (written,) = list((tmp_path / "outbox").glob("*.eml"))
    parsed = message_from_bytes(written.read_bytes(), policy=default)
    assert parsed["Subject"] == "Chào bạn"
    assert parsed["To"] == "a@example.com"


def test_smtp_urls_follow_section_8() -> None:
    assert SmtpUrl.parse("smtp://user:p%40ss@mail.example:587") == SmtpUrl(
        "mail.example", 587, "user", "p@ss", "starttls-if-offered"
    )
    assert SmtpUrl.parse("smtps://mail.example").port == 465
    assert SmtpUrl.parse("smtps://mail.example").tls == "tls"
    assert SmtpUrl.parse("smtp://mail.example:25?tls=off").tls == "off"
    assert SmtpUrl.parse("smtp://mail.example?tls=required").tls == "starttls"
    assert SmtpUrl.parse("smtp://mail.example").port == 25


@pytest.mark.usefixtures("staff")
async def test_a_job_refused_with_its_inquiry_leaves_neither(
    mail_api: Api, smtp: SmtpServer
) -> None:
    """All or nothing: when the job cannot be queued, the inquiry is not stored either."""
    postgres = mail_api.state.fastdb.dialect == "postgresql"
    create, drop = (PG_REFUSE_JOBS, PG_ALLOW_JOBS) if postgres else (SQLITE_REFUSE, SQLITE_ALLOW)
    visitor = unique_email("refused")
    await run_sql(mail_api, create)
    try:
        response = await mail_api.client.post(
            SUBMIT, json={"name": NAME, "email": visitor, "message": MESSAGE}
        )
        # Refused (PostgreSQL: 500; SQLite's RAISE(ABORT) reads as a conflict, 409): never 201.
        assert response.status_code in (409, 500)
    finally:
        await run_sql(mail_api, drop)
    async with mail_api.state.engine.connect() as conn:
        stored = await conn.execute(
            text("SELECT count(*) FROM inquiries WHERE email = :e"), {"e": visitor}
        )
        assert stored.scalar_one() == 0
    await asyncio.sleep(1)
    assert smtp.received(visitor) == []


PG_REFUSE_JOBS = [
    """CREATE FUNCTION test_refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'no jobs (test)'; END $$""",
    "CREATE TRIGGER test_refuse_jobs BEFORE INSERT ON pgqueuer "
    "FOR EACH ROW EXECUTE FUNCTION test_refuse_jobs()",
]
PG_ALLOW_JOBS = [
    "DROP TRIGGER IF EXISTS test_refuse_jobs ON pgqueuer",
    "DROP FUNCTION IF EXISTS test_refuse_jobs()",
]
SQLITE_REFUSE = [
    "CREATE TRIGGER test_refuse_jobs BEFORE INSERT ON jobs "
    "BEGIN SELECT RAISE(ABORT, 'no jobs (test)'); END"
]
SQLITE_ALLOW = ["DROP TRIGGER IF EXISTS test_refuse_jobs"]


async def run_sql(api: Api, statements: list[str]) -> None:
    async with api.state.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


@pytest.mark.parametrize("mail_api", ["postgresql"], indirect=True)  # deferred triggers
async def test_a_commit_that_fails_sends_nothing(
    mail_api: Api, smtp: SmtpServer, staff: list[str]
) -> None:
    """The submit's statement queued the job, then its commit failed: no inquiry, no mail.
    (SQLite has no deferred trigger: the refused-job test above covers its transaction.)"""
    visitor = unique_email("commit")
    await run_sql(mail_api, PG_FAIL_AT_COMMIT)
    try:
        for key in (None, uuid.uuid4().hex):  # the grouped autocommit and the keyed transaction
            headers = {"Idempotency-Key": key} if key else None
            response = await mail_api.client.post(
                SUBMIT,
                json={
                    "name": NAME,
                    "email": visitor,
                    "message": MESSAGE,
                    "subject": "fail-at-commit",
                },
                headers=headers,
            )
            assert response.status_code >= 500
    finally:
        await run_sql(mail_api, PG_ALLOW_COMMIT)
    await asyncio.sleep(1.5)
    assert smtp.received(visitor) == []
    assert smtp.received(staff[0]) == []
    assert [j for j in await queued(mail_api) if j["status"] != "failed"] == []


PG_FAIL_AT_COMMIT = [
    """CREATE FUNCTION test_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'refused at commit (test)'; END $$""",
    "CREATE CONSTRAINT TRIGGER test_fail_at_commit AFTER INSERT ON inquiries "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.subject = 'fail-at-commit') "
    "EXECUTE FUNCTION test_fail_at_commit()",
]
PG_ALLOW_COMMIT = [
    "DROP TRIGGER IF EXISTS test_fail_at_commit ON inquiries",
    "DROP FUNCTION IF EXISTS test_fail_at_commit()",
]
