"""The local fan-out (realtime/server.py FanoutManager, _Socket): what python-socketio's own
broadcast did, without a task per client. A real uvicorn in this loop, real clients on both
transports, with and without Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import socketio
from websockets.asyncio.client import connect as ws_connect

from outreach.auth.devkeys import load_or_create_key, mint_token
from outreach.realtime.server import FanoutManager, Realtime, ResilientRedisManager, _Socket
from tests.realtime.cluster import SOCKETIO_PATH
from tests.realtime.test_session_lifetime import (
    engineio_url,
    make_realtime,
    serve,
    socketio_app,
)
from tests.support import REDIS_URL, Server

ROOMS = ["role:OWNER", "role:CASHIER"]


async def connect(
    base: str, token: str, transports: list[str]
) -> tuple[socketio.AsyncClient, list[Any]]:
    client = socketio.AsyncClient(reconnection=False)
    received: list[Any] = []
    client.on("inquiry.sent", received.append)
    await client.connect(
        base,
        socketio_path=SOCKETIO_PATH,
        auth={"token": token},
        transports=transports,
        wait_timeout=5,
    )
    return client, received


async def until(condition: Callable[[], bool], timeout: float = 5.0, what: Any = None) -> None:
    """Wait for a state (not a timing assertion: the bound only stops a hung test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached: {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("redis_url", [None, REDIS_URL], ids=["embedded", "redis"])
async def test_every_client_gets_each_event_once_in_order_on_both_transports(
    tmp_path: Path, redis_url: str | None
) -> None:
    key = load_or_create_key(tmp_path)
    rt = make_realtime(key, redis_url)
    assert isinstance(rt.sio.manager, FanoutManager)
    assert isinstance(rt.sio.manager, ResilientRedisManager) == (redis_url is not None)
    owner = mint_token(key, sub="o", roles=["OWNER", "CASHIER"], ttl=600)  # in both rooms
    cashier = mint_token(key, sub="c", roles=["CASHIER"], ttl=600)
    outsider = mint_token(key, sub="m", roles=["MARKETING"], ttl=600)
    async with serve(socketio_app(rt)) as base:
        clients = []
        try:
            for token, transports in (
                (owner, ["websocket"]),
                (cashier, ["polling"]),  # long-polling only: its queue is read by GETs
                (cashier, ["websocket"]),
                (outsider, ["websocket"]),
            ):
                clients.append(await connect(base, token, transports))
            # engine.io's sockets of this process run our writer (no task per wait).
            assert all(type(s) is _Socket for s in rt.sio.eio.sockets.values())
            for i in range(20):
                assert await rt.emit("inquiry.sent", {"id": str(i), "n": "Khách"}, ROOMS)
            expected = [{"id": str(i), "n": "Khách"} for i in range(20)]
            counts = [len(r) for _, r in clients]
            await until(lambda: all(len(r) >= 20 for _, r in clients[:3]), what=counts)
            await asyncio.sleep(0.2)  # a duplicate would have arrived by now
            for _, received in clients[:3]:
                assert received == expected
            assert clients[3][1] == []
        finally:
            await rt.close()  # first: it answers the polling client's pending GET
            for client, _ in clients:
                await client.disconnect()


async def test_a_client_past_its_pong_is_closed_not_sent_to(tmp_path: Path) -> None:
    """As engine.io's own send: a socket whose pong is overdue is closed instead."""
    key = load_or_create_key(tmp_path)
    rt: Realtime = make_realtime(key)
    token = mint_token(key, sub="o", roles=["OWNER"], ttl=600)
    async with serve(socketio_app(rt)) as base, httpx.AsyncClient(timeout=5) as http:
        # A raw engine.io polling session, connected to "/" with its token, then left.
        handshake = await http.get(engineio_url(base))
        sid = orjson.loads(handshake.text[1:])["sid"]
        url = f"{engineio_url(base)}&sid={sid}"
        posted = await http.post(url, content=b"40" + orjson.dumps({"token": token}))
        assert posted.status_code == 200
        connected = await http.get(url)
        assert connected.text.startswith("40"), connected.text
        live, received = await connect(base, token, ["websocket"])
        try:
            socket_ = rt.sio.eio.sockets[sid]
            socket_.last_ping = time.time() - 3600  # a ping sent long ago, never answered
            assert await rt.emit("inquiry.sent", {"id": "1"}, ROOMS)
            await until(lambda: received == [{"id": "1"}])
            assert socket_.closed
            assert sid not in rt.sio.eio.sockets or rt.sio.eio.sockets[sid].closed
        finally:
            await rt.close()
            await live.disconnect()


async def test_the_server_does_not_compress_websocket_frames(tmp_path: Path) -> None:
    """`outreach serve` declines permessage-deflate, which clients offer (here the websockets
    client, as browsers and Node's `ws` do): compressing every event once per client was
    half the fan-out's time (docs/realtime.md, "Measured")."""
    env = {
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deflate.db'}",
        "APP_ENV": "test",
    }
    server = Server(env)
    try:
        server.wait_ready(30)
        url = engineio_url(server.url.replace("http://", "ws://"), "websocket")
        async with ws_connect(url, compression="deflate") as ws:
            opened = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(opened, str)
            assert opened.startswith("0{")  # engine.io's open packet: the transport works
            assert ws.response is not None
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
    finally:
        server.stop()
