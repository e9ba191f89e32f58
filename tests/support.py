"""Fixtures: a real PostgreSQL database and a SQLite file per run, built by the migrations.

Tests that touch data run against PostgreSQL (127.0.0.1:5432, see scripts/services.sh) and,
where marked with the `backend` fixture, against the embedded SQLite default too. A missing
PostgreSQL or Redis is an error, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc.jwk import ECKey

from outreach.auth.devkeys import load_or_create_key, mint_token
from outreach.config import Settings
from outreach.core.logging import configure_logging
from outreach.ids.snowflake import SnowflakeGenerator
from outreach.main import create_app, served
from outreach.models import migrate
from outreach.state import State

PG_ADMIN = os.environ.get("TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BASE = "/v1/api/outreach"

# Every JSON body any test client received: checked for leaked unsubscribe tokens at the end.
RECEIVED_BODIES: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `last` run after everything else (the whole-suite secret scan)."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "last: run after every other test")
    configure_logging("warning", "logfmt")


def _pg_url(db: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + db


@asynccontextmanager
async def migrated_database(backend: str, var_dir: Path) -> AsyncIterator[str]:
    """A new database of its own (PostgreSQL, or an SQLite file under var_dir), migrated to
    head and dropped after: for tests whose background work (the job queue) must not meet
    that of the session's apps."""
    if backend == "sqlite":
        var_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(var_dir / f'own-{uuid.uuid4().hex[:8]}.db').as_posix()}"
        await migrate(Settings(database_url=url, app_env="test", var_dir=var_dir))
        yield url
        return
    name = f"outreach_own_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _pg_url(name)
    try:
        await migrate(Settings(database_url=url, app_env="test"))
        yield url
    finally:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this run, migrated to head."""
    name = f"outreach_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:  # pragma: no cover - environment
        pytest.fail(f"PostgreSQL is required at {PG_ADMIN}: {exc} (run `make services`)")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _pg_url(name)
    await migrate(Settings(database_url=url, app_env="test"))
    yield url
    admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
async def sqlite_database(var_dir: Path) -> str:
    url = f"sqlite:///{(var_dir / 'test.db').as_posix()}"
    await migrate(Settings(database_url=url, app_env="test", var_dir=var_dir))
    return url


@pytest.fixture(scope="session")
def dev_key(var_dir: Path) -> ECKey:
    return load_or_create_key(var_dir)


@dataclass
class Api:
    """An app with its lifespan running and an httpx client over it."""

    app: Any
    client: httpx.AsyncClient
    key: ECKey
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, *roles: str, sub: str = "user-1", **extra: Any) -> str:
        return mint_token(self.key, sub=sub, roles=list(roles), extra=extra or None)

    def auth(self, *roles: str, sub: str = "user-1") -> dict[str, str]:
        key = f"{sub}:{','.join(roles)}"
        if key not in self.tokens:
            self.tokens[key] = self.token(*roles, sub=sub)
        return {"Authorization": f"Bearer {self.tokens[key]}"}

    @property
    def owner(self) -> dict[str, str]:
        return self.auth("OWNER", sub="owner-1")

    @property
    def state(self) -> State:
        """The app's State (outreach/state.py)."""
        state: State = self.app.state.outreach
        return state

    async def drain_events(self) -> None:
        await self.state.events.drain()


_worker_ids = iter(range(100, 1000))


async def _record(response: httpx.Response) -> None:
    await response.aread()
    if "json" in response.headers.get("content-type", ""):
        RECEIVED_BODIES.append(response.text)


def make_settings(database_url: str, var_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "app_env": "test",
        "var_dir": var_dir,
        "public_base_url": "https://shop.example",
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def start_api(
    settings: Settings, key: ECKey, *, client: str = "203.0.113.7"
) -> AsyncIterator[Api]:
    """The app with its lifespan, and a client whose requests come from `client` through the
    served app's outermost callable (the hot routes: http/hotpath.py)."""
    app = create_app(settings, ids=SnowflakeGenerator(next(_worker_ids)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=served(app), client=(client, 50000))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            event_hooks={"response": [_record]},
        ) as http:
            yield Api(app=app, client=http, key=key, settings=settings)


@pytest.fixture(scope="session")
async def pg_api(pg_database: str, var_dir: Path, dev_key: ECKey) -> AsyncIterator[Api]:
    async with start_api(make_settings(pg_database, var_dir), dev_key) as api:
        yield api


@pytest.fixture(scope="session")
async def sqlite_api(sqlite_database: str, var_dir: Path, dev_key: ECKey) -> AsyncIterator[Api]:
    async with start_api(make_settings(sqlite_database, var_dir), dev_key) as api:
        yield api


@pytest.fixture(params=["postgresql", "sqlite"])
def api(request: pytest.FixtureRequest) -> Api:
    """The same test on PostgreSQL and on the embedded SQLite default."""
    fixture = "pg_api" if request.param == "postgresql" else "sqlite_api"
    result: Api = request.getfixturevalue(fixture)
    return result


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


Emit = tuple[str, dict[str, Any], list[str]]


class Recorder:
    """Realtime emits seen by an app, in order: (event, payload, rooms).

    Stands in for the emitter: `monkeypatch.setattr(api.state.realtime, "emit", rec.emit)`.
    """

    def __init__(self) -> None:
        self.calls: list[Emit] = []

    async def emit(self, event: str, payload: Any, rooms: Any, **_: Any) -> bool:
        self.calls.append((event, dict(payload), list(rooms)))
        return True

    def of(self, event: str) -> list[dict[str, Any]]:
        """The payloads of one event."""
        return [payload for name, payload, _ in self.calls if name == event]

    def about(self, email: str) -> list[Emit]:
        """The emits whose payload carries this email address."""
        return [call for call in self.calls if call[1].get("email") == email]

    def about_id(self, entity_id: str) -> list[Emit]:
        """The emits whose payload carries this id."""
        return [call for call in self.calls if call[1].get("id") == entity_id]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A real `outreach serve` process (for what only a real process shows)."""

    def __init__(
        self, env: dict[str, str], *, port: int | None = None, args: list[str] | None = None
    ) -> None:
        import subprocess
        import sys

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("APP_", "DATABASE_", "REDIS_", "JWKS_", "JWT_"))
        }
        full_env.update({"PORT": str(self.port), "LOG_LEVEL": "info", **env})
        self.log_path = Path(env.get("VAR_DIR", "var")) / f"server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "outreach.cli",
                "serve",
                "--port",
                str(self.port),
                *(args or []),
            ],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0, path: str = "/healthz") -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready: {self.output()[-2000:]}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ---- outgoing connections (webhooks): a guard and a DNS stub ------------------------------

LOOPBACK = {"127.0.0.1", "::1"}


@dataclass
class Dialled:
    """The addresses connected to while the guard was on."""

    addresses: list[str] = field(default_factory=list)


@pytest.fixture
def connect_guard(monkeypatch: pytest.MonkeyPatch) -> Dialled:
    """Fail the test on any connection that is not to 127.0.0.1 or ::1: an SSRF test proves
    that a refused address is never dialled, and nothing a test does leaves the machine."""
    import socket

    dialled = Dialled()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])
            dialled.addresses.append(host)
            if host not in LOOPBACK:
                pytest.fail(f"a connection to {host} was attempted")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return dialled


Answer = list[str] | Callable[[], list[str]]


@dataclass
class Dns:
    """A DNS stub at `socket.getaddrinfo` (the system boundary our resolver calls): the
    names it answers, with which addresses (others go to the real resolver), and the
    lookups of those names it got."""

    names: dict[str, Answer] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)


def _numeric(name: str) -> bool:
    """An address written as a name (127.0.0.1, 2130706433, ::1): no lookup needed."""
    import socket

    for parse in (socket.inet_aton, lambda n: socket.inet_pton(socket.AF_INET6, n)):
        try:
            parse(name)
        except OSError:
            continue
        return True
    return False


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    import socket

    stub = Dns()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in stub.names:
            if name is None or name == "localhost" or _numeric(name):
                return real(host, port, *args, **kwargs)
            # A real lookup would ask the machine's resolver, which is not on loopback.
            pytest.fail(f"a DNS lookup of {name} was attempted")
        stub.lookups.append(name)
        answer = stub.names[name]
        addresses = answer() if callable(answer) else answer
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, int(port or 0), 0, 0) if ":" in a else (a, int(port or 0)),
            )
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return stub
