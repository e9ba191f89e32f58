"""Graceful shutdown of a real `outreach serve` under load (docs/operations.md).

On SIGTERM: /readyz answers 503 at once (and every answer carries `Connection: close`) for
SHUTDOWN_READY_DELAY_SECONDS; then the server stops accepting, in-flight requests finish,
Socket.IO clients are disconnected, and the process exits 0 well within its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import socketio

from outreach.auth.devkeys import load_or_create_key, mint_token
from tests.support import BASE, Server

SUBMIT = f"{BASE}/inquiries/submit"
READY_DELAY = 1.5
DRAIN = 10.0


def inquiry() -> dict[str, str]:
    marker = uuid.uuid4().hex[:10]
    return {"name": "Drain", "email": f"drain-{marker}@example.com", "message": f"m {marker}"}


@dataclass
class Submitter:
    """Keeps POSTing on one kept-alive connection until the server says it is going away."""

    statuses: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ended_by: str = ""

    async def run(self, url: str, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=15) as client:
            while not stop.is_set():
                try:
                    response = await client.post(SUBMIT, json=inquiry())
                except httpx.ConnectError:
                    # A NEW connection refused once the listener closed: acceptable.
                    self.ended_by = "refused"
                    return
                except httpx.HTTPError as exc:  # reset or cut mid-request: never acceptable
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    return
                self.statuses.append((time.monotonic(), response.status_code))
                if response.headers.get("connection", "").lower() == "close":
                    # The server is draining: ask readiness (on a new connection) and go away.
                    try:
                        ready = await client.get("/readyz")
                    except httpx.ConnectError:
                        self.ended_by = "refused"
                        return
                    if ready.status_code == 503:
                        self.ended_by = "unready"
                        return
            self.ended_by = "stopped"


async def slow_body(chunks: list[bytes], pause: float) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(pause)


async def test_sigterm_drains_in_flight_requests_and_exits_0(
    pg_database: str, tmp_path: Path
) -> None:
    key = load_or_create_key(tmp_path)  # before the server: it signs with the same key
    env = {
        "DATABASE_URL": pg_database,
        "VAR_DIR": str(tmp_path),
        "APP_ENV": "test",
        "APP_ENV_NODE_ID": "5",  # no REDIS_URL: unregistered fixed id, nothing shared
        "SHUTDOWN_READY_DELAY_SECONDS": str(READY_DELAY),
        "SHUTDOWN_DRAIN_SECONDS": str(DRAIN),
    }
    server = Server(env)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    sockets: list[socketio.AsyncClient] = []
    try:
        await asyncio.to_thread(server.wait_ready, 40)

        # Socket.IO clients, one per transport: a pending long-poll must not hold the drain.
        token = mint_token(key, sub="ops-1", roles=["OWNER"])
        disconnected: dict[str, float] = {}
        for transport in ("websocket", "polling"):
            sio = socketio.AsyncClient(reconnection=False)

            async def on_disconnect(*_: object, name: str = transport) -> None:
                disconnected[name] = time.monotonic()

            sio.on("disconnect", on_disconnect)
            await sio.connect(
                server.url,
                socketio_path=f"{BASE}/socket.io",
                auth={"token": token},
                transports=[transport],
                wait_timeout=10,
            )
            sockets.append(sio)

        # A prober with a kept-alive connection, as a load balancer's health check has.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=10) as probe:
            assert (await probe.get("/readyz")).status_code == 200

            submitters = [Submitter() for _ in range(4)]
            tasks = [asyncio.create_task(s.run(server.url, stop)) for s in submitters]
            await asyncio.sleep(1.0)  # a steady stream first

            # A slow request, its body still arriving when SIGTERM comes and for ~2 s after.
            body = orjson.dumps(inquiry())
            step = len(body) // 6 + 1
            chunks = [body[i : i + step] for i in range(0, len(body), step)]
            async with httpx.AsyncClient(base_url=server.url, timeout=20) as slow_client:
                slow = asyncio.create_task(
                    slow_client.post(
                        SUBMIT,
                        content=slow_body(chunks, 0.5),
                        headers={"Content-Type": "application/json"},
                    )
                )
                await asyncio.sleep(0.6)

                before = sum(len(s.statuses) for s in submitters)
                server.proc.send_signal(signal.SIGTERM)
                sigterm_at = time.monotonic()

                # /readyz on the kept-alive connection: 503 at once, and told to close.
                await asyncio.sleep(0.2)
                unready = await probe.get("/readyz")
                assert unready.status_code == 503
                assert unready.json()["status"] == "fail"
                assert unready.headers["connection"] == "close"
                assert time.monotonic() - sigterm_at < READY_DELAY

                slow_response = await slow
                slow_done = time.monotonic()
            code = await asyncio.to_thread(server.proc.wait, READY_DELAY + DRAIN + 10)
            exited = time.monotonic() - sigterm_at
            done, _ = await asyncio.wait(tasks, timeout=10)
            assert len(done) == len(tasks)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for sio in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sio.disconnect(), 5)
        server.stop(timeout=20)

    output = server.output()
    assert code == 0, output[-3000:]
    # Within bound: the ready delay, then the drain of the slow request; not the drain limit.
    assert exited < READY_DELAY + DRAIN, exited
    assert exited < READY_DELAY + 5, exited

    # The in-flight slow request finished normally, after the server began shutting down.
    assert slow_response.status_code == 201, slow_response.text
    assert slow_done - sigterm_at > READY_DELAY

    # No request failed: every answer a success, no reset, no error status.
    for submitter in submitters:
        assert submitter.errors == [], submitter.errors
        assert {status for _, status in submitter.statuses} == {201}
        assert submitter.ended_by in {"unready", "refused"}, submitter.ended_by
    after = sum(len(s.statuses) for s in submitters) - before
    assert before > 4
    assert after >= 4  # requests kept being served during the ready delay

    # Socket.IO clients were disconnected by the server, once the drain began.
    assert set(disconnected) == {"websocket", "polling"}, disconnected
    for at in disconnected.values():
        assert READY_DELAY - 0.2 < at - sigterm_at < READY_DELAY + 3

    assert "Shutdown requested" in output
    assert "timeout graceful shutdown exceeded" not in output
    assert "Outreach stopped" in output
