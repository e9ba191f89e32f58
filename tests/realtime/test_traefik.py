"""The same two replicas behind a real Traefik (deploy/traefik, templated to free ports), with
the real Node `socket.io-client` 4.x that the staff portal and Node services use.

What is shown: the default transports (long-polling, then the upgrade to WebSocket) work
through the load balancer because of the sticky cookie, which a Node client keeps only with
`withCredentials: true`; without it the session breaks at once; WebSocket alone needs no
cookie; refusals arrive as `unauthorized`; a client whose replica shuts down reconnects
through Traefik to the other one and keeps receiving events.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.realtime.cluster import Cluster, NodeClient, Traefik, submit
from tests.support import Server

pytestmark = pytest.mark.slow

CONNECT_BOUND = 10.0
DELIVERY_BOUND = 3.0


def marker() -> str:
    return uuid.uuid4().hex[:12]


def backends_of(traefik: Traefik, engine_id: str) -> set[str]:
    """The replicas Traefik's access log shows for the requests of one Engine.IO session."""
    log = (traefik.workdir / "access.log").read_text(errors="replace")
    found = set()
    for line in log.splitlines():
        if "/socket.io/" in line and f"sid={engine_id}" in line:
            match = re.search(r'"(http://127\.0\.0\.1:\d+)" \d+ms$', line)
            if match:
                found.add(match.group(1))
    return found


async def wait_delivered(client: NodeClient, inquiry_id: str, bound: float) -> dict[str, object]:
    data: dict[str, object] = await client.wait(
        lambda: client.event("inquiry.sent", inquiry_id), bound, f"inquiry.sent {inquiry_id}"
    )
    return data


@asynccontextmanager
async def node_client(
    socket_io_client: Path, traefik: Traefik, **options: str
) -> AsyncIterator[NodeClient]:
    """A Node socket.io-client started against Traefik, stopped on the way out."""
    client = NodeClient()
    try:
        await client.start(socket_io_client, traefik.url, **options)
        yield client
    finally:
        await client.stop()


async def connected(client: NodeClient) -> list[dict[str, Any]]:
    """The client's `connect` lines, once there is one."""
    connect: list[dict[str, Any]] = await client.wait(
        lambda: client.of("connect"), CONNECT_BOUND, "connect"
    )
    return connect


async def test_default_transports_with_credentials_stick_to_one_replica(
    cluster: Cluster, traefik: Traefik, socket_io_client: Path
) -> None:
    async with node_client(
        socket_io_client,
        traefik,
        token=cluster.token("OWNER", sub="node-owner"),
        with_credentials="true",
    ) as client:
        connect = await connected(client)
        opened = client.of("open")[0]
        assert opened["transport"] == "polling"
        upgrade = await client.wait(lambda: client.of("upgrade"), CONNECT_BOUND, "upgrade")
        assert upgrade[0]["transport"] == "websocket"
        assert client.of("start")[0]["version"] == "4.8.4"

        async with httpx.AsyncClient(timeout=10) as http:
            # Whichever replica the client sits on, events from both reach it.
            from_a, _ = await submit(http, cluster.a.url, marker())
            from_b, _ = await submit(http, cluster.b.url, marker())
            # And a submit through Traefik itself (the public route, rate limited there).
            through, _ = await submit(http, traefik.url, marker())
            for inquiry_id in (from_a, from_b, through):
                data = await wait_delivered(client, inquiry_id, DELIVERY_BOUND)
                assert data["status"] == "SENT"
        assert client.of("connect_error") == []
        assert client.of("disconnect") == []
        # Handshake, polls, the CONNECT packet and the upgrade all went to one replica.
        engine_id = connect[0]["engineId"]
        assert engine_id == opened["engineId"]
        backends = backends_of(traefik, engine_id)
        assert len(backends) == 1, backends
        assert backends <= {cluster.a.url, cluster.b.url}


async def test_default_transports_without_credentials_break(
    cluster: Cluster, traefik: Traefik, socket_io_client: Path
) -> None:
    """Node drops Traefik's sticky cookie unless `withCredentials: true`: round robin then
    sends the session's second request to the other replica, which does not know it (400)."""
    async with node_client(
        socket_io_client,
        traefik,
        token=cluster.token("OWNER", sub="node-no-cookie"),
        with_credentials="false",
    ) as client:
        errors = await client.wait(lambda: client.of("connect_error"), CONNECT_BOUND, "an error")
        assert errors[0]["message"] in {"xhr post error", "xhr poll error"}, errors
        assert errors[0]["description"] == "400"
        await asyncio.sleep(1.0)
        assert client.of("connect") == []


async def test_websocket_only_needs_no_cookie(
    cluster: Cluster, traefik: Traefik, socket_io_client: Path
) -> None:
    async with node_client(
        socket_io_client,
        traefik,
        token=cluster.token("CASHIER", sub="node-cashier"),
        transports="websocket",
        with_credentials="false",
    ) as client:
        connect = await connected(client)
        assert connect[0]["transport"] == "websocket"
        async with httpx.AsyncClient(timeout=10) as http:
            for base in (cluster.a.url, cluster.b.url):
                inquiry_id, _ = await submit(http, base, marker())
                await wait_delivered(client, inquiry_id, DELIVERY_BOUND)


@pytest.mark.parametrize("token", ["not-a-jwt", None], ids=["bad-token", "no-token"])
async def test_refused_with_unauthorized_through_traefik(
    traefik: Traefik, socket_io_client: Path, token: str | None
) -> None:
    options = {"token": token} if token is not None else {}
    async with node_client(socket_io_client, traefik, **options) as client:
        errors = await client.wait(lambda: client.of("connect_error"), CONNECT_BOUND, "refusal")
        assert errors[0]["message"] == "unauthorized", errors
        assert client.of("connect") == []


async def test_client_of_a_stopping_replica_reconnects_to_the_other(
    cluster: Cluster, traefik: Traefik, socket_io_client: Path
) -> None:
    """SIGTERM to the client's replica: its transport is closed (not a Socket.IO-level
    disconnect, after which socket.io-client would not reconnect), the client reconnects
    through Traefik, which moves it to the live replica, and events reach it again. The
    stopped replica is started again on its port for whatever runs next."""
    stopping: Server | None = None
    try:
        async with node_client(
            socket_io_client,
            traefik,
            token=cluster.token("EMPLOYEE", sub="node-failover"),
            with_credentials="true",
        ) as client:
            connect = await connected(client)
            await client.wait(lambda: client.of("upgrade"), CONNECT_BOUND, "upgrade")
            (home,) = backends_of(traefik, connect[0]["engineId"])
            stopping = cluster.replica(home)
            survivor = cluster.b if stopping is cluster.a else cluster.a

            stopped_at = time.monotonic()
            stopping.proc.send_signal(signal.SIGTERM)
            reasons = await client.wait(lambda: client.of("disconnect"), 30, "disconnect")
            assert reasons[0]["reason"] in {"transport close", "transport error"}, reasons
            again = await client.wait(
                lambda: client.of("connect")[1:], 20, "the reconnection through Traefik"
            )
            reconnect_seconds = time.monotonic() - stopped_at
            assert backends_of(traefik, again[0]["engineId"]) == {survivor.url}
            async with httpx.AsyncClient(timeout=10) as http:
                inquiry_id, _ = await submit(http, survivor.url, marker())
                await wait_delivered(client, inquiry_id, DELIVERY_BOUND)
            assert reconnect_seconds < 20
    finally:
        if stopping is not None:
            await asyncio.to_thread(cluster.restart, stopping)
