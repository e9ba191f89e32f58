"""Outages with real processes: PostgreSQL stopped under load, a stalled identity service.

The PostgreSQL here is a private cluster this test starts on its own port (never the
machine's shared one). Redis outages are in tests/realtime (the realtime path is what they
degrade); JWKS outages with cached keys are in tests/auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey

from outreach.auth.devkeys import mint_token
from tests.support import BASE, Server, free_port, make_settings, start_api

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="outreach-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._pg("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust")

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l",
                 str(self.dir / "log"), "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    if not PG_BIN.exists():
        pytest.fail(f"PostgreSQL server binaries are required at {PG_BIN}")
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.mark.slow
async def test_postgres_stopped_under_load(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    env = {"DATABASE_URL": private_pg.url, "VAR_DIR": str(tmp_path), "LOG_LEVEL": "warning"}
    repo = Path(__file__).parents[2]
    migrate = subprocess.run(
        # The interpreter running the tests, on this checkout's code (a worktree may use
        # another checkout's virtualenv).
        [sys.executable, "-m", "outreach.cli", "migrate"],
        env={**env, "PATH": "/usr/bin:/bin", "PYTHONPATH": f"{repo / 'src'}:{repo}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    server = Server(env)
    answers: Counter[int] = Counter()
    slowest = 0.0
    stop = asyncio.Event()

    async def load(client: httpx.AsyncClient) -> None:
        nonlocal slowest
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            response = await client.post(
                f"{BASE}/inquiries/submit",
                json={"name": "Load", "email": f"load{n}@example.com", "message": "m"},
            )
            slowest = max(slowest, time.monotonic() - started)
            answers[response.status_code] += 1
            if response.status_code == 503:
                assert response.headers["retry-after"]
                assert response.headers["content-type"] == "application/problem+json"
            await asyncio.sleep(0.01)

    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            workers = [asyncio.create_task(load(client)) for _ in range(4)]
            await asyncio.sleep(1.0)
            private_pg.stop()
            await asyncio.sleep(3.0)
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "fail"
            during = Counter(answers)
            private_pg.start()
            back_at = time.monotonic()
            recovered = None
            while time.monotonic() - back_at < 30:
                response = await client.post(
                    f"{BASE}/inquiries/submit",
                    json={"name": "Back", "email": "back@example.com", "message": "m"},
                )
                ready = await client.get("/readyz")
                if response.status_code == 201 and ready.status_code == 200:
                    recovered = time.monotonic() - back_at
                    break
                await asyncio.sleep(0.25)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        server.stop()
    assert during[503] > 0, during  # the outage was seen, as 503s
    assert recovered is not None, "not working again within 30 s of PostgreSQL's return"
    assert set(answers) <= {201, 503}, answers  # never a 500 (or anything else)
    assert slowest < 5.0  # quick answers, never a hang
    assert "Unhandled error" not in server.output()


class StalledJwks:
    """An identity service that takes 10 s to answer."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/jwks.json"
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(10)
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        try:
            yield
        finally:
            self._server.close()


async def test_a_stalled_identity_service_does_not_slow_public_routes(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    jwks = StalledJwks()
    settings = make_settings(pg_database, var_dir, jwks_url=jwks.url)
    async with jwks.running(), start_api(settings, dev_key) as api:
        token = mint_token(ECKey.generate_key("P-256", auto_kid=True), sub="x", roles=["OWNER"])
        admin = asyncio.create_task(
            api.client.get(f"{BASE}/inquiries", headers={"Authorization": f"Bearer {token}"})
        )
        await asyncio.sleep(0.2)  # the admin request is now waiting on the JWKS fetch
        timings = []
        for i in range(20):
            started = time.monotonic()
            response = await api.client.post(
                f"{BASE}/inquiries/submit",
                json={"name": "Fast", "email": f"fast{i}@example.com", "message": "m"},
            )
            timings.append(time.monotonic() - started)
            assert response.status_code == 201
        assert not admin.done()
        answer = await admin
    assert max(timings) < 0.5, timings
    # No keys could be had: 503 auth-unavailable, after the fetch's own timeout (3 s), not 10 s.
    assert answer.status_code == 503
    assert answer.json()["type"].endswith("/auth-unavailable")
