"""In-process (fast): best-effort emits are bounded, logged with the contract's fields and
counted; the Redis manager fails fast where nothing answers and re-subscribes on its own; the
Socket.IO endpoint's Origin check."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from outreach.auth.devkeys import load_or_create_key
from outreach.auth.jwks import StaticKeys, TokenVerifier
from outreach.core.metrics import Metrics
from outreach.realtime import server as realtime_module
from outreach.realtime.events import Events
from outreach.realtime.server import EMIT_TIMEOUT_SECONDS, Realtime, ResilientRedisManager
from tests.realtime.cluster import RedisProcess

ROOMS = ["role:CASHIER", "role:EMPLOYEE", "role:OWNER"]


class FixedRooms:
    """Stands for the Authorizer: the seeded policy's readers of inquiries."""

    def roles_that_may(self, resource: str, action: str) -> tuple[str, ...]:
        assert (resource, action) == ("inquiries", "read")
        return ("CASHIER", "EMPLOYEE", "OWNER")


def make_realtime(tmp_path: Path, redis_url: str | None = None) -> Realtime:
    key = load_or_create_key(tmp_path)
    return Realtime(
        verifier=TokenVerifier(StaticKeys({key.kid: key})),
        metrics=Metrics(CollectorRegistry()),
        redis_url=redis_url,
        cors_origins=[],
    )


def failures(rt: Realtime) -> float:
    value = rt.metrics.registry.get_sample_value("outreach_realtime_emit_failures_total")
    return value or 0.0


async def test_a_hung_emit_is_cut_at_one_second_logged_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_realtime(tmp_path)

    async def hang(*_: Any, **__: Any) -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(rt.sio, "emit", hang)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        sent = await rt.emit("inquiry.sent", {"id": "1"}, ROOMS, inquiryId="1")
    took = time.monotonic() - started
    assert sent is False
    assert EMIT_TIMEOUT_SECONDS - 0.1 < took < EMIT_TIMEOUT_SECONDS + 0.5
    assert failures(rt) == 1
    (warning,) = [e for e in logs if e["event"] == "Socket event service not ready"]
    assert warning["log_level"] == "warning"
    assert warning["_event"] == "inquiry.sent"  # rendered as the field `event`
    assert warning["inquiryId"] == "1"
    assert warning["error"] == "TimeoutError"


async def test_a_failed_emit_logs_no_inquiry_sent_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_realtime(tmp_path)
    calls: list[tuple[str, Any]] = []

    async def fail(event: str, data: Any, **_: Any) -> None:
        calls.append((event, data))
        raise ConnectionError("redis down")

    monkeypatch.setattr(rt.sio, "emit", fail)
    events = Events(rt, FixedRooms())  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        events.publish("inquiry.sent", {"id": "7"}, inquiryId="7")
        await events.drain()
    assert calls == [("inquiry.sent", {"id": "7"})]
    assert [e["event"] for e in logs] == ["Socket event service not ready"]
    assert logs[0]["error"] == "ConnectionError"
    assert failures(rt) == 1

    async def succeed(*_: Any, **__: Any) -> None:
        return None

    monkeypatch.setattr(rt.sio, "emit", succeed)
    with structlog.testing.capture_logs() as logs:
        events.publish("inquiry.sent", {"id": "8"}, inquiryId="8")
        await events.drain()
    rooms = '["role:CASHIER","role:EMPLOYEE","role:OWNER"]'
    assert [e["event"] for e in logs] == [f"Inquiry SENT | inquiryId: 8 | rooms: {rooms}"]
    assert logs[0]["rooms"] == rooms
    assert failures(rt) == 1


async def test_publishing_where_no_redis_answers_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as holder:  # a port that refuses: bound, never listening
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        rt = make_realtime(tmp_path, f"redis://127.0.0.1:{port}/0")
        try:
            started = time.monotonic()
            with structlog.testing.capture_logs():
                sent = await rt.emit("inquiry.sent", {"id": "2"}, ROOMS, inquiryId="2")
            assert sent is False
            assert time.monotonic() - started < EMIT_TIMEOUT_SECONDS + 0.5
            assert failures(rt) == 1
        finally:
            await rt.close()


async def test_publishing_to_a_hung_redis_is_cut_at_one_second(tmp_path: Path) -> None:
    redis = RedisProcess(log_dir=tmp_path)
    redis.start()
    rt = make_realtime(tmp_path, redis.url)
    try:
        assert await rt.emit("inquiry.sent", {"id": "3"}, ROOMS, inquiryId="3") is True
        redis.pause()
        started = time.monotonic()
        with structlog.testing.capture_logs():
            sent = await rt.emit("inquiry.sent", {"id": "4"}, ROOMS, inquiryId="4")
        assert sent is False
        assert time.monotonic() - started < EMIT_TIMEOUT_SECONDS + 0.5
        redis.resume()
        # The connection the cut publish used is not reused broken: the next one goes out.
        assert await rt.emit("inquiry.sent", {"id": "5"}, ROOMS, inquiryId="5") is True
    finally:
        redis.resume()
        await rt.close()
        redis.stop()


async def test_listener_resubscribes_within_a_second_and_never_spins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarted on its port: the listener is back in ~0.5 s (the stock one: up to 60)."""
    monkeypatch.setattr(realtime_module, "LISTEN_RETRY_SECONDS", 0.2)
    redis = RedisProcess(log_dir=tmp_path)
    redis.start()
    manager = ResilientRedisManager(redis.url, channel="t", redis_options={})
    received: list[bytes] = []

    async def consume() -> None:
        async for data in manager._listen():
            received.append(data)

    task = asyncio.create_task(consume())
    try:
        await manager.wait_first_subscription(5)
        assert manager.subscribed
        await manager._publish({"n": 1})
        await _until(lambda: len(received) == 1)
        redis.stop()
        await _until(lambda: not manager.subscribed)
        # While Redis is away the loop sleeps between attempts (no busy loop): the event
        # loop stays responsive.
        lag = await _loop_lag(0.5)
        assert lag < 0.1
        redis.start()
        back = time.monotonic()
        await _until(lambda: manager.subscribed, timeout=3)
        assert time.monotonic() - back < 1.5
        await manager._publish({"n": 2})
        await _until(lambda: len(received) == 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await manager.aclose()
        redis.stop()


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _loop_lag(seconds: float) -> float:
    """The worst delay of a 10 ms sleep over `seconds`."""
    worst = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - started - 0.01)
    return worst


@pytest.mark.parametrize(
    ("configured", "origin", "headers", "accepted"),
    [
        ([], "https://evil.example", {}, True),  # no list: no check (tokens, not cookies)
        (["https://shop.example"], "https://shop.example", {}, True),
        (["https://shop.example"], "https://evil.example", {}, False),
        # The page's own origin, as for HTTP: directly, and behind TLS-terminating Traefik.
        (["https://shop.example"], "http://admin.example", {}, True),
        (["https://shop.example"], "https://admin.example", {"X-Forwarded-Proto": "https"}, True),
        (["https://shop.example"], "https://admin.example", {}, False),
    ],
)
async def test_origin_check_of_the_socket_io_endpoint(
    tmp_path: Path,
    configured: list[str],
    origin: str,
    headers: dict[str, str],
    accepted: bool,
) -> None:
    import httpx
    import socketio

    key = load_or_create_key(tmp_path)
    rt = Realtime(
        verifier=TokenVerifier(StaticKeys({key.kid: key})),
        metrics=Metrics(CollectorRegistry()),
        redis_url=None,
        cors_origins=configured,
    )
    app = socketio.ASGIApp(rt.sio, socketio_path="v1/api/outreach/socket.io")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin.example"
    ) as http:
        response = await http.get(
            "/v1/api/outreach/socket.io/",
            params={"EIO": "4", "transport": "polling"},
            headers={"Origin": origin, **headers},
        )
    assert (response.status_code == 200) is accepted, response.text
    if accepted and configured:
        assert response.headers["access-control-allow-origin"] == origin
