"""Socket.IO (API.md section 6): authenticated rooms, and best-effort events after commit.

With REDIS_URL the events go through Redis so every replica's clients get them. A publish
that fails or hangs never fails the request: it is bounded, logged as
`Socket event service not ready`, counted, and the listener re-subscribes quickly when Redis
is back (the stock manager backs off up to 60 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import socketio
import structlog

from outreach.auth.jwks import TokenVerifier
from outreach.auth.principal import authenticate, bearer_token
from outreach.core.errors import OutreachError
from outreach.core.metrics import Metrics

log = structlog.get_logger("outreach.realtime")

EMIT_TIMEOUT_SECONDS = 1.0
LISTEN_RETRY_SECONDS = 0.5


class _OrjsonCodec:
    """Socket.IO's JSON codec, faster (payloads are plain dicts of strings)."""

    @staticmethod
    def dumps(obj: Any, *_: Any, **__: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, *_: Any, **__: Any) -> Any:
        return orjson.loads(data)


class ResilientRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """AsyncRedisManager that reports publish failures and re-subscribes without long back-off."""

    async def _publish(self, data: Any) -> Any:
        try:
            if not self.connected:  # type: ignore[has-type]
                self._redis_connect()
            return await self.redis.publish(self.channel, self.json.dumps(data))
        except Exception:
            self.connected = False
            raise

    async def _redis_listen_with_retries(self) -> Any:
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    await self.pubsub.subscribe(self.channel)
                    subscribed = True
                    log.info("Realtime subscribed to Redis", channel=self.channel)
                async for message in self.pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if subscribed:
                    log.warning("Realtime lost Redis; re-subscribing", error=type(exc).__name__)
                subscribed = False
                await asyncio.sleep(LISTEN_RETRY_SECONDS)


class Realtime:
    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        metrics: Metrics,
        redis_url: str | None,
        cors_origins: list[str],
        channel: str = "outreach",
    ) -> None:
        self.metrics = metrics
        self._verifier = verifier
        manager: socketio.AsyncManager | None = None
        if redis_url:
            manager = ResilientRedisManager(
                redis_url,
                channel=channel,
                redis_options={
                    "socket_timeout": EMIT_TIMEOUT_SECONDS,
                    "socket_connect_timeout": EMIT_TIMEOUT_SECONDS,
                    "health_check_interval": 10,
                },
            )
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=manager,
            cors_allowed_origins=cors_origins or [],
            json=_OrjsonCodec,
            logger=False,
            engineio_logger=False,
            ping_interval=25,
            ping_timeout=20,
            max_http_buffer_size=64 * 1024,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)

    async def _on_connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> None:
        token: str | None = None
        if isinstance(auth, dict) and isinstance(auth.get("token"), str):
            token = auth["token"].strip()
            token = token.removeprefix("Bearer ").strip()
        if not token:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        try:
            principal = await authenticate(self._verifier, token)
        except OutreachError:
            raise ConnectionRefusedError("unauthorized") from None
        rooms = [f"role:{role}" for role in principal.roles] + [f"user:{principal.sub}"]
        for room in rooms:
            await self.sio.enter_room(sid, room)
        await self.sio.save_session(sid, {"sub": principal.sub})
        self.metrics.realtime_clients.inc()
        log.info("Realtime client connected", sub=principal.sub, rooms=rooms)

    async def _on_disconnect(self, _sid: str, *_: Any) -> None:
        self.metrics.realtime_clients.dec()

    async def emit(
        self, event: str, payload: Mapping[str, Any], rooms: Iterable[str], **fields: Any
    ) -> bool:
        """Send `event` to `rooms`; False (logged and counted) when it could not be published."""
        targets = list(rooms)
        if not targets:
            return True
        try:
            await asyncio.wait_for(
                self.sio.emit(event, dict(payload), to=targets), timeout=EMIT_TIMEOUT_SECONDS
            )
        except Exception as exc:  # noqa: BLE001 - best effort by contract
            self.metrics.realtime_emit_failures.inc()
            log.warning(
                "Socket event service not ready", event=event, error=type(exc).__name__, **fields
            )
            return False
        return True

    async def disconnect_all(self) -> None:
        """On shutdown: clients reconnect to another replica."""
        try:
            for sid in list(self.sio.manager.get_participants("/", None)):
                await self.sio.disconnect(sid[0] if isinstance(sid, tuple) else sid)
        except Exception as exc:  # noqa: BLE001
            log.warning("Realtime disconnect failed", error=type(exc).__name__)

    async def close(self) -> None:
        await self.disconnect_all()
        manager = self.sio.manager
        task = getattr(manager, "thread", None)
        if isinstance(task, asyncio.Task):
            task.cancel()
        redis = getattr(manager, "redis", None)
        if redis is not None:
            try:
                await redis.aclose()
            except Exception:  # noqa: BLE001
                pass
