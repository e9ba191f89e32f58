"""The mail queue's guarantees with real `outreach serve` replicas on PostgreSQL and a real
SMTP server process: each mail sent once by one of two replicas; the limits hold across
them; a replica killed while SMTP is down loses nothing; SIGTERM lets a slow send finish;
`outreach worker` works the queue alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.mail.conftest import MAIL_FROM, staff_address
from tests.mail.support import SmtpServer
from tests.support import BASE, Server, migrated_database, unique_email

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[str]:
    async with migrated_database("postgresql", tmp_path / "db") as url:
        yield url


@pytest.fixture
def replicas() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


def env(database: str, smtp: SmtpServer, tmp_path: Path, node: int, staff: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database,
        "VAR_DIR": str(tmp_path / f"var-{node}"),
        "APP_ENV_NODE_ID": str(node),
        "TOKEN_SECRET": "replicas-test-secret-" + "s" * 32,
        "PUBLIC_BASE_URL": "https://shop.example",
        "SMTP_URL": smtp.url,
        "MAIL_FROM": MAIL_FROM,
        "INQUIRY_NOTIFY_TO": staff,
        "INQUIRY_ACK": "true",
        "SUBSCRIBE_CONFIRMATION": "double",
        "JOBS_HEARTBEAT_TIMEOUT_SECONDS": "3",
        "LOG_LEVEL": "info",
    }


async def submit(url: str, email: str, **extra: str) -> str:
    async with httpx.AsyncClient(base_url=url + BASE, timeout=20) as http:
        response = await http.post(
            "/inquiries/submit",
            json={"name": "Lê Minh", "email": email, "message": "Chào", **extra},
        )
    assert response.status_code == 201, response.text
    inquiry_id: str = response.json()["id"]
    return inquiry_id


async def jobs(database: str) -> list[tuple[str, str, int]]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT entrypoint, status::text, attempts FROM pgqueuer")
    finally:
        await conn.close()
    return [(r[0], r[1], r[2]) for r in rows]


async def until_idle(database: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while await jobs(database):
        assert time.monotonic() < deadline, await jobs(database)
        await asyncio.sleep(0.1)


async def test_two_replicas_send_each_mail_once_and_share_the_limits(
    database: str, tmp_path: Path, replicas: list[Server]
) -> None:
    smtp = SmtpServer(tmp_path / "smtp")
    smtp.start()
    staff = staff_address()
    try:
        replicas += [Server(env(database, smtp, tmp_path, n, staff)) for n in (21, 22)]
        for server in replicas:
            server.wait_ready()
        visitors = [unique_email(f"r{n}") for n in range(30)]
        ids = await asyncio.gather(
            *(submit(replicas[n % 2].url, email) for n, email in enumerate(visitors))
        )
        # One stranger subscribed twenty times through both replicas at once.
        stranger = unique_email("stranger")

        async def subscribe(url: str) -> int:
            async with httpx.AsyncClient(base_url=url + BASE, timeout=20) as http:
                response = await http.post("/subscribers/subscribe", json={"email": stranger})
                return response.status_code

        codes = await asyncio.gather(*(subscribe(replicas[n % 2].url) for n in range(20)))
        assert set(codes) == {202}
        notified = await smtp.wait_for(staff, count=30, timeout=30)
        for visitor in visitors:
            await smtp.wait_for(visitor)
        await smtp.wait_for(stranger)
        await until_idle(database)
        await asyncio.sleep(1)
        assert len(smtp.received(staff)) == 30
        assert sorted(m.part("plain").rsplit(": ", 1)[1].strip() for m in notified) == sorted(ids)
        assert all(len(smtp.received(v)) == 1 for v in visitors)
        assert len(smtp.received(stranger)) == 1
        outputs = [server.output() for server in replicas]
        assert all("Mail sent" in out for out in outputs), "both replicas work the queue"
    finally:
        for server in replicas:
            server.stop()
        smtp.stop()


async def test_a_replica_killed_while_smtp_is_down_loses_no_mail(
    database: str, tmp_path: Path, replicas: list[Server]
) -> None:
    smtp = SmtpServer(tmp_path / "smtp")  # not started: SMTP is down
    staff = staff_address()
    first = Server(env(database, smtp, tmp_path, 23, staff))
    replicas.append(first)
    first.wait_ready()
    visitor = unique_email("killed")
    await submit(first.url, visitor)
    deadline = time.monotonic() + 15
    while not any(
        kind == "mail.inquiry-ack" and tries >= 1 for kind, _, tries in await jobs(database)
    ):
        assert time.monotonic() < deadline, await jobs(database)
        await asyncio.sleep(0.1)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    smtp.start()
    try:
        second = Server(env(database, smtp, tmp_path, 24, staff))
        replicas.append(second)
        second.wait_ready()
        (ack,) = await smtp.wait_for(visitor, timeout=40)
        (notify,) = await smtp.wait_for(staff, timeout=40)
        assert ack.header("Subject") == "Cửa hàng Lan đã nhận được lời nhắn của bạn"
        assert "Lê Minh" in notify.header("Subject")
        await until_idle(database)
    finally:
        for server in replicas:
            server.stop()
        smtp.stop()


async def test_a_replica_killed_mid_send_is_taken_over(
    database: str, tmp_path: Path, replicas: list[Server]
) -> None:
    """Killed while its SMTP conversation is under way: another replica takes the job over
    once its heartbeat is old. At least once: the server may have kept the first copy."""
    smtp = SmtpServer(tmp_path / "smtp", args=["--delay", "2"])
    smtp.start()
    staff = staff_address()
    try:
        first = Server(env(database, smtp, tmp_path, 25, staff) | {"INQUIRY_ACK": "false"})
        replicas.append(first)
        first.wait_ready()
        await submit(first.url, unique_email("midsend"))
        deadline = time.monotonic() + 10
        while not any(
            kind == "mail.inquiry-notify" and status == "picked"
            for kind, status, _ in await jobs(database)
        ):
            assert time.monotonic() < deadline, await jobs(database)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # inside the slow DATA
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        second = Server(env(database, smtp, tmp_path, 26, staff) | {"INQUIRY_ACK": "false"})
        replicas.append(second)
        second.wait_ready()
        await until_idle(database, timeout=40)
        copies = smtp.received(staff)
        assert 1 <= len(copies) <= 2
        assert "Mail sent" in second.output()
    finally:
        for server in replicas:
            server.stop()
        smtp.stop()


async def test_sigterm_lets_a_slow_send_finish(
    database: str, tmp_path: Path, replicas: list[Server]
) -> None:
    smtp = SmtpServer(tmp_path / "smtp", args=["--delay", "2"])
    smtp.start()
    staff = staff_address()
    try:
        server = Server(env(database, smtp, tmp_path, 27, staff) | {"INQUIRY_ACK": "false"})
        replicas.append(server)
        server.wait_ready()
        await submit(server.url, unique_email("term"))
        deadline = time.monotonic() + 10
        while not any(
            status == "picked"
            for kind, status, _ in await jobs(database)
            if kind == "mail.inquiry-notify"
        ):
            assert time.monotonic() < deadline, await jobs(database)
            await asyncio.sleep(0.05)
        assert server.stop() == 0
        assert len(smtp.received(staff)) == 1  # finished before the process ended
        assert await jobs(database) == []
    finally:
        smtp.stop()


async def test_outreach_worker_works_the_queue_alone(database: str, tmp_path: Path) -> None:
    smtp = SmtpServer(tmp_path / "smtp")
    smtp.start()
    staff = staff_address()
    replica_env = env(database, smtp, tmp_path, 28, staff)
    # Every replica runs a worker: this one's cannot reach SMTP, and it stops once the job
    # is queued, so only `outreach worker` can send the mail.
    api = Server(replica_env | {"SMTP_URL": "smtp://127.0.0.1:9?tls=off"})
    worker = None
    try:
        api.wait_ready()
        visitor = unique_email("alone")
        await submit(api.url, visitor)
        api.stop()
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("APP_", "DATABASE_"))},
            **replica_env,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "outreach.cli", "worker"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        await smtp.wait_for(visitor, timeout=30)
        await smtp.wait_for(staff, timeout=30)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        assert worker.stdout is not None
        out = worker.stdout.read().decode()
        assert "Job worker started" in out
        assert "Job worker stopped" in out
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        smtp.stop()
