"""A Socket.IO connection stays open only while it is authorized (API.md section 6).

A session ends at its token's `exp` plus the leeway (a Socket.IO-level disconnect, so clients
do not reconnect by themselves with the dead token), and an engine.io transport that has not
completed the authenticated connect in time is closed. Real uvicorn on 127.0.0.1, real
clients (python-socketio, socket.io-client, raw engine.io over HTTP and websocket); small
limits through Realtime's constructor, and the served app's defaults in the last test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import socketio
import structlog
import uvicorn
from joserfc.jwk import ECKey
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from outreach.auth.devkeys import load_or_create_key, mint_token
from outreach.auth.jwks import LEEWAY_SECONDS, StaticKeys, TokenVerifier
from outreach.core.metrics import Metrics
from outreach.ids.snowflake import SnowflakeGenerator
from outreach.main import create_asgi
from outreach.realtime.server import CONNECT_TIMEOUT_SECONDS, Realtime
from tests.realtime.cluster import SOCKETIO_PATH, NodeClient, SioClient, wait_until
from tests.support import REDIS_URL, free_port, make_settings

CLIENTS = "outreach_realtime_connected_clients"


def make_realtime(key: ECKey, redis_url: str | None = None, **limits: Any) -> Realtime:
    return Realtime(
        verifier=TokenVerifier(StaticKeys({key.kid: key})),
        metrics=Metrics(CollectorRegistry()),
        redis_url=redis_url,
        cors_origins=[],
        channel=f"test-lifetime-{uuid.uuid4().hex[:8]}",  # no other test's events
        **limits,
    )


def clients(rt: Realtime) -> float:
    return rt.metrics.registry.get_sample_value(CLIENTS) or 0.0


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """uvicorn on a free 127.0.0.1 port in this event loop (so tests call the server directly)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), 20, what="uvicorn")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:  # a connection still open (a failed test): do not wait for it
            server.force_exit = True
            await asyncio.wait_for(task, 10)


def socketio_app(rt: Realtime) -> Any:
    return socketio.ASGIApp(rt.sio, socketio_path=SOCKETIO_PATH.strip("/"))


def engineio_url(base: str, transport: str = "polling") -> str:
    return f"{base}{SOCKETIO_PATH}/?EIO=4&transport={transport}"


@contextlib.asynccontextmanager
async def raw_websocket(base: str) -> AsyncIterator[ClientConnection]:
    """An engine.io websocket transport, opened: it got the `0{...}` open packet."""
    async with ws_connect(engineio_url(base.replace("http://", "ws://"), "websocket")) as ws:
        opened = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(opened, str), opened
        assert opened.startswith("0{"), opened
        yield ws


async def closed_within(ws: ClientConnection, timeout: float) -> float:
    """Seconds until the server closed the websocket, having sent engine.io's close packet
    (`1`, what tells a real client why) before; AssertionError if it stays open."""
    started = time.monotonic()
    received: list[str | bytes] = []

    async def read_until_closed() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                received.append(await ws.recv())

    try:
        await asyncio.wait_for(read_until_closed(), timeout)
    except TimeoutError:
        raise AssertionError(f"the transport was still open after {timeout} s") from None
    assert received[-1:] == ["1"], received
    return time.monotonic() - started


@pytest.mark.parametrize("redis_url", [None, REDIS_URL], ids=["embedded", "redis"])
async def test_a_session_is_disconnected_when_its_token_expires(
    tmp_path: Path, redis_url: str | None
) -> None:
    key = load_or_create_key(tmp_path)
    leeway = 1.0
    rt = make_realtime(key, redis_url, session_leeway=leeway)
    exp = int(time.time()) + 3
    token = mint_token(key, sub="expiring-1", roles=["OWNER"], extra={"exp": exp})
    client = SioClient()  # reconnection on: it must not come back by itself
    disconnected: list[float] = []

    async def on_disconnect(*_: Any) -> None:
        disconnected.append(time.time())

    client.client.on("disconnect", on_disconnect)
    try:
        with structlog.testing.capture_logs() as logs:
            async with serve(socketio_app(rt)) as base:
                await client.connect(base, token=token)
                assert await rt.emit("inquiry.sent", {"id": "before"}, ["role:OWNER"])
                await client.wait_for("inquiry.sent", "before", 2)
                assert time.time() < exp  # received while the token was valid

                await wait_until(lambda: disconnected, exp + leeway + 3 - time.time(), what="exp")
                # At exp + leeway (the timer), not before, and not much after.
                assert exp + leeway - 0.2 <= disconnected[0] <= exp + leeway + 2

                await rt.emit("inquiry.sent", {"id": "after"}, ["role:OWNER"])
                await asyncio.sleep(1.5)  # ample for a delivery, and for a reconnection
                assert client.received("inquiry.sent", "after") is None
                assert not client.client.connected
                assert len(disconnected) == 1
                assert clients(rt) == 0
                assert not rt._sessions
                await client.close()
    finally:
        await client.close()
        await rt.close()
    (expired,) = [entry for entry in logs if entry["event"] == "Realtime session expired"]
    assert expired["log_level"] == "info"
    assert expired["sub"] == "expiring-1"


async def test_socket_io_client_is_told_the_server_disconnected_it_and_stays_away(
    tmp_path: Path, socket_io_client: Path
) -> None:
    """socket.io-client 4.x: reason `io server disconnect`, after which it does not reconnect."""
    key = load_or_create_key(tmp_path)
    rt = make_realtime(key, session_leeway=1.0)
    exp = int(time.time()) + 3
    token = mint_token(key, sub="expiring-2", roles=["OWNER"], extra={"exp": exp})
    node = NodeClient()
    try:
        async with serve(socketio_app(rt)) as base:
            await node.start(socket_io_client, base, token=token, seconds="30")
            await node.wait(lambda: node.of("connect"), 10, "connect")
            await rt.emit("inquiry.sent", {"id": "before"}, ["role:OWNER"])
            await node.wait(lambda: node.event("inquiry.sent", "before"), 3, "event")
            await node.wait(lambda: node.of("disconnect"), exp + 1 + 3 - time.time(), "expiry")
            assert time.time() >= exp + 1 - 0.2
            await rt.emit("inquiry.sent", {"id": "after"}, ["role:OWNER"])
            await asyncio.sleep(2)  # its reconnection delay is 0.2-1 s
            assert [line["reason"] for line in node.of("disconnect")] == ["io server disconnect"]
            assert not node.of("reconnect_attempt")
            assert len(node.of("connect")) == 1
            assert node.event("inquiry.sent", "after") is None
    finally:
        await node.stop()
        await rt.close()


async def test_a_token_already_past_the_session_leeway_is_refused(tmp_path: Path) -> None:
    """Still inside the verifier's 30 s leeway, but past the session's: nothing to connect."""
    key = load_or_create_key(tmp_path)
    rt = make_realtime(key, session_leeway=1.0)
    token = mint_token(key, sub="late", roles=["OWNER"], extra={"exp": int(time.time()) - 5})
    client = SioClient(reconnection=False)
    try:
        async with serve(socketio_app(rt)) as base:
            with contextlib.suppress(socketio.exceptions.ConnectionError):
                await client.connect(base, token=token)
            assert not client.client.connected
            await wait_until(lambda: client.connect_errors, 5, what="connect_error")
            assert client.connect_errors[0] == {"message": "unauthorized"}
            await client.close()
    finally:
        await client.close()
        await rt.close()
    assert clients(rt) == 0


async def test_a_normal_disconnect_cancels_the_session_timer(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    rt = make_realtime(key)
    token = mint_token(key, sub="leaving", roles=["OWNER"], ttl=3600)
    client = SioClient()
    try:
        async with serve(socketio_app(rt)) as base:
            await client.connect(base, token=token)
            ((sid, timer),) = rt._sessions.items()
            assert timer is not None
            # The timer is set for exp + leeway (loop time), within a second or two.
            expected = asyncio.get_running_loop().time() + 3600 + LEEWAY_SECONDS
            assert abs(timer.when() - expected) < 2
            assert clients(rt) == 1
            await client.close()
            await wait_until(lambda: not rt._sessions, 5, what="the session to end")
            assert timer.cancelled()
            assert clients(rt) == 0
    finally:
        await client.close()
        await rt.close()


async def test_a_transport_that_never_connects_is_closed_and_a_session_is_kept(
    tmp_path: Path,
) -> None:
    key = load_or_create_key(tmp_path)
    limit = 1.5
    rt = make_realtime(key, connect_timeout=limit)
    token = mint_token(key, sub="stays", roles=["OWNER"], ttl=3600)
    client = SioClient()
    try:
        async with serve(socketio_app(rt)) as base, httpx.AsyncClient(timeout=5) as http:
            await client.connect(base, token=token)
            # Polling: the engine.io handshake, and never the `40` CONNECT packet.
            handshake = await http.get(engineio_url(base))
            assert handshake.status_code == 200
            assert handshake.text.startswith("0{"), handshake.text
            polling_sid = orjson.loads(handshake.text[1:])["sid"]
            opened_at = time.monotonic()
            # Websocket: opened, nothing sent.
            async with raw_websocket(base) as ws:
                took = await closed_within(ws, limit + 2)
            assert limit - 0.3 <= took <= limit + 1.5

            await asyncio.sleep(max(0.0, opened_at + limit + 0.5 - time.monotonic()))
            poll = await http.get(f"{engineio_url(base)}&sid={polling_sid}")
            assert poll.status_code == 400, poll.text  # the session is gone
            assert not rt._tasks  # and nothing waits for a client that never polls again

            # The authenticated client, connected before both, is still there and served.
            assert client.client.connected
            assert await rt.emit("inquiry.sent", {"id": "later"}, ["role:OWNER"])
            await client.wait_for("inquiry.sent", "later", 2)
            await client.close()
    finally:
        await client.close()
        await asyncio.wait_for(rt.close(), 5)  # bounded: a left-over polling session hung it


async def test_a_transport_left_without_a_session_gets_the_same_time_again(
    tmp_path: Path,
) -> None:
    """Connect "/", then disconnect "/" only (`41`) and keep the transport: closed after the
    limit, as a new one would be (a client ignoring its expiry is in the same case)."""
    key = load_or_create_key(tmp_path)
    limit = 1.5
    rt = make_realtime(key, connect_timeout=limit)
    token = mint_token(key, sub="lingers", roles=["OWNER"], ttl=3600)
    try:
        async with serve(socketio_app(rt)) as base:
            async with raw_websocket(base) as ws:
                await ws.send("40" + orjson.dumps({"token": token}).decode())
                connected = await asyncio.wait_for(ws.recv(), 5)
                assert isinstance(connected, str), connected
                assert connected.startswith("40{"), connected
                await asyncio.sleep(limit + 0.5)  # a session: kept past the limit
                assert rt._sessions
                await ws.send("41")
                await wait_until(lambda: not rt._sessions, 5, what="the namespace disconnect")
                took = await closed_within(ws, limit + 2)
            assert limit - 0.3 <= took <= limit + 1.5
    finally:
        await rt.close()


async def test_closing_does_not_wait_for_a_polling_client_that_never_polls(
    tmp_path: Path,
) -> None:
    """Shutdown closes every transport; engine.io's own disconnect would wait for this one's
    next poll forever (it waits until the client has taken the close packet)."""
    rt = make_realtime(load_or_create_key(tmp_path))
    async with serve(socketio_app(rt)) as base, httpx.AsyncClient(timeout=5) as http:
        handshake = await http.get(engineio_url(base))
        assert handshake.status_code == 200
        polling_sid = orjson.loads(handshake.text[1:])["sid"]
        try:
            await asyncio.wait_for(rt.disconnect_all(), 3)
        finally:
            await asyncio.wait_for(rt.close(), 3)
        poll = await http.get(f"{engineio_url(base)}&sid={polling_sid}")
        assert poll.status_code == 400, poll.text


async def test_the_served_app_closes_an_unconnected_transport_after_10_seconds(
    pg_database: str, tmp_path: Path
) -> None:
    """The defaults in the app that `outreach serve` runs: 10 s, and the token's 30 s leeway."""
    key = load_or_create_key(tmp_path)
    app = create_asgi(make_settings(pg_database, tmp_path), ids=SnowflakeGenerator(990))
    rt: Realtime = app.api.state.outreach.realtime  # type: ignore[attr-defined]
    assert (rt.connect_timeout, rt.session_leeway) == (CONNECT_TIMEOUT_SECONDS, LEEWAY_SECONDS)
    client = SioClient()
    try:
        async with serve(app) as base:
            await client.connect(base, token=mint_token(key, sub="served", roles=["OWNER"]))
            async with raw_websocket(base) as ws:
                took = await closed_within(ws, CONNECT_TIMEOUT_SECONDS + 3)
            assert CONNECT_TIMEOUT_SECONDS - 0.3 <= took <= CONNECT_TIMEOUT_SECONDS + 1.5
            assert client.client.connected
            assert await rt.emit("inquiry.sent", {"id": "served"}, ["role:OWNER"])
            await client.wait_for("inquiry.sent", "served", 2)
            await client.close()
    finally:
        await client.close()
