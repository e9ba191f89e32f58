"""Socket.IO (API.md section 6): authenticated rooms, and best-effort events after commit.

With REDIS_URL the events go through Redis so every replica's clients get them. A publish
that fails or hangs never fails the request: it is bounded, logged as
`Socket event service not ready`, counted, and the listener re-subscribes quickly when Redis
is back (the stock manager backs off up to 60 s). See docs/realtime.md.

A session lasts only as long as its token (exp + the leeway), and a transport that has not
completed the authenticated connect within CONNECT_TIMEOUT_SECONDS is closed: one timer
handle each (a heap entry, never a task), so idle clients cost nothing until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from typing import Any

import orjson
import socketio
import structlog
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from socketio import packet as sio_packet
from socketio.packet import Packet

from outreach.auth.jwks import LEEWAY_SECONDS, TokenVerifier
from outreach.auth.principal import authenticate, bearer_token
from outreach.core.errors import OutreachError
from outreach.core.metrics import Metrics

log = structlog.get_logger("outreach.realtime")

EMIT_TIMEOUT_SECONDS = 1.0
LISTEN_RETRY_SECONDS = 0.5
# A new replica's first client waits at most this long for the Redis subscription, so that a
# client that is connected also receives what is published from then on.
FIRST_SUBSCRIBE_WAIT_SECONDS = 1.0
# Concurrent publishes at most (a hung Redis holds each one for up to EMIT_TIMEOUT_SECONDS).
PUBLISH_MAX_CONNECTIONS = 64
# An engine.io transport (polling or websocket) without an authenticated Socket.IO session on
# "/" after this long is closed (API.md section 6): otherwise it is held open for nothing.
CONNECT_TIMEOUT_SECONDS = 10.0
# A session's expiry timer fires no sooner than this after its connect (see _on_connect).
MIN_SESSION_SECONDS = 0.5
# Packets in one long-polling answer at most (python-engineio clients accept 16: _Socket).
MAX_PACKETS_PER_POLL = 16


def _keepalive_options() -> dict[int, int]:
    """A dead Redis peer (a vanished pod) ends the listener's connection in ~11 s, not ~2 h."""
    options: dict[int, int] = {}
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        constant = getattr(socket, name, None)
        if constant is not None:
            options[constant] = value
    return options


class _OrjsonCodec:
    """Socket.IO's JSON codec, faster (payloads are plain dicts of strings)."""

    @staticmethod
    def dumps(obj: Any, *_: Any, **__: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, *_: Any, **__: Any) -> Any:
        return orjson.loads(data)


class FanoutManager(socketio.AsyncManager):  # type: ignore[misc]
    """The local delivery of an event to this process's clients, without a task per client.

    python-socketio's AsyncManager already encodes a broadcast once, then starts one task
    per recipient that goes through `eio.send_packet` -> `socket.send` (two coroutines)
    into the socket's queue, and waits for all of them: with 500 clients, 500 tasks and
    1,500 coroutine steps before the first socket's writer runs. Putting the one encoded
    packet into each socket's queue is what those tasks end up doing; here it is a plain
    loop. A socket whose client has missed its pong goes the stock way (engine.io closes it),
    and so does anything but a plain broadcast (callbacks, binary data). Measured with
    bench/realtime_latency.py: the first client of 500 gets an event ~3 ms sooner; the CPU
    per event is about the same (README, "Workers, metrics and realtime fan-out").
    """

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or isinstance(data, tuple) or namespace not in self.rooms:
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback,
                **kwargs,
            )  # fmt: skip
            return
        payload = [event] if data is None else [event, data]
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=payload)
        encoded = encoded.encode()
        if isinstance(encoded, list):  # binary attachments: several packets each
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, **kwargs)
            return
        message = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        message.encode()  # cached in the packet: every socket's writer sends this string
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        eio = self.server.eio
        sockets = eio.sockets
        stale_after = time.time() - eio.ping_timeout
        late = []
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            socket_ = sockets.get(eio_sid)
            if socket_ is None or socket_.closed:
                continue  # gone: engine.io's send_packet skips it too
            if socket_.last_ping and socket_.last_ping < stale_after:
                late.append(socket_)
                continue
            socket_.queue.put_nowait(message)
        for socket_ in late:
            with contextlib.suppress(Exception):
                await socket_.send(message)  # finds the ping timeout and closes it


class _Socket(AsyncSocket):  # type: ignore[misc]
    """engine.io's socket, whose writer waits for its next packets without a task per wait.

    `AsyncSocket.poll` waits with `asyncio.wait_for(queue.get(), ...)`, which on Python 3.11
    wraps the `get` in a new task each time: a task, a future and a timer per packet per
    client, in every fan-out. `asyncio.timeout` gives the same bound with one timer and no
    task: ~17 % less CPU per event with 500 clients (bench/realtime_latency.py, README).
    And a long-poll answer carries at most MAX_PACKETS_PER_POLL packets (the rest wait
    for the next poll): python-engineio's client refuses a payload of more than 16 ("Too
    many packets in payload") and drops the connection, which a burst of events (or one
    fan-out that no longer yields between emits) would otherwise send. Otherwise the same
    (engineio 4.x's poll, which this mirrors)."""

    async def poll(self) -> list[Any]:
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                packets = [await self.queue.get()]
            self.queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise eio_exceptions.QueueEmpty() from None
        if packets == [None]:
            return []
        queue = self.queue
        while len(packets) < MAX_PACKETS_PER_POLL and not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets


class ResilientRedisManager(socketio.AsyncRedisManager, FanoutManager):  # type: ignore[misc]
    """AsyncRedisManager that reports publish failures and re-subscribes without long back-off.

    The stock manager shares one client between publishing and listening and replaces both
    whenever either fails; a publish failing while the listener re-subscribed could leave the
    listener on a pubsub that was never subscribed (whose `listen()` returns at once: a busy
    loop). Here the publisher has one client for the process (its pool reconnects by itself)
    and the listener makes its own client for each subscription, closed when it is lost.
    """

    def __init__(self, url: str, *, channel: str, redis_options: Mapping[str, Any]) -> None:
        super().__init__(url, channel=channel, redis_options=dict(redis_options))
        self._options = dict(redis_options)
        self._publisher: Redis | None = None
        self._listener: Redis | None = None
        self._first_attempt = asyncio.Event()
        self.subscribed = False
        self._outbox: list[tuple[Any, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def _client(self, **overrides: Any) -> Redis:
        client: Redis = Redis.from_url(self.redis_url, **{**self._options, **overrides})
        return client

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Publish to the other replicas while delivering to this one's clients.

        The stock manager delivers locally first and publishes after, so every other
        replica waited for this one's whole fan-out (10-20 ms with 500 local clients,
        bench/realtime_latency.py). Here both start at once. A failed publish still raises
        (Realtime.emit counts it) while the local delivery goes on: this replica's clients
        get the event even without Redis. Cancelling the emit (the 1 s bound) cancels both.
        """
        room = to or room
        if callback is not None or kwargs.get("ignore_queue") or isinstance(data, tuple):
            await super().emit(
                event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                callback=callback, **kwargs,
            )  # fmt: skip
            return
        payload = [data]
        if Packet.data_is_binary(payload):
            await super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid)
            return
        message = {
            "method": "emit",
            "event": event,
            "data": payload,
            "binary": False,
            "namespace": namespace or "/",
            "room": room,
            "skip_sid": skip_sid,
            "callback": None,
            "host_id": self.host_id,
        }
        published = self._enqueue(message)
        try:
            # One turn of the loop lets the flusher put the PUBLISH on the wire before the
            # local fan-out (no task per emit: this runs once per event on the hot path).
            await asyncio.sleep(0)
            await self._handle_emit(message)
        except BaseException:
            # This emit is abandoned (cancelled, or the local fan-out failed): so is waiting
            # for its publish, whose failure, if any, must not be left unretrieved.
            if published.done():
                if not published.cancelled():
                    published.exception()
            else:
                published.cancel()
            raise
        await published

    async def _publish(self, data: Any) -> None:
        await self._enqueue(data)

    def _enqueue(self, data: Any) -> asyncio.Future[None]:
        """Group publish: messages emitted while one PUBLISH is in flight go out together in
        the next, as one `batch` message (one Redis round trip and one encode for many
        events under load; a lone event is published as itself). Each caller still waits for
        its own message (the future) and sees its failure."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((data, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                if len(batch) == 1:
                    message = batch[0][0]
                else:
                    message = {"method": "batch", "items": [item for item, _ in batch]}
                try:
                    await self._publish_now(message)
                except Exception as exc:  # noqa: BLE001 - each waiting emit gets it
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._flusher = None

    async def _publish_now(self, data: Any) -> Any:
        if self._publisher is None:
            # One immediate retry: the first command on a pooled connection that Redis closed
            # (a restart) fails once, then the pool reconnects.
            self._publisher = self._client(
                retry=Retry(NoBackoff(), 1), max_connections=PUBLISH_MAX_CONNECTIONS
            )
        return await self._publisher.publish(self.channel, self.json.dumps(data))

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        lost = False
        while True:
            client = self._client(
                retry=Retry(NoBackoff(), 0),  # failures come here: one retry policy, below
                socket_timeout=None,  # an idle subscription is not a timeout
                socket_keepalive=True,
                socket_keepalive_options=_keepalive_options(),
            )
            self._listener = client
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(self.channel), EMIT_TIMEOUT_SECONDS)
                self.subscribed = True
                self._first_attempt.set()
                log.info("Realtime subscribed to Redis", channel=self.channel)
                lost = False
                async for message in pubsub.listen():
                    yield message
                raise ConnectionError("subscription ended")  # never a busy loop
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: subscribe again
                if not lost:
                    log.warning("Realtime lost Redis; re-subscribing", error=type(exc).__name__)
                    lost = True
            finally:
                self.subscribed = False
                self._first_attempt.set()
                await _close_quietly(pubsub, client)
            await asyncio.sleep(LISTEN_RETRY_SECONDS)

    async def _listen(self) -> AsyncIterator[Any]:
        channel = self.channel.encode("utf-8")
        async for message in self._redis_listen_with_retries():
            if (
                message.get("channel") == channel
                and message.get("type") == "message"
                and "data" in message
            ):
                try:
                    decoded = self.json.loads(message["data"])
                except ValueError:
                    continue
                if isinstance(decoded, dict) and decoded.get("method") == "batch":
                    for item in decoded.get("items", ()):
                        yield item
                else:
                    yield decoded

    async def wait_first_subscription(self, timeout: float) -> None:
        """Until the listener's first attempt to subscribe has succeeded or failed."""
        if not self._first_attempt.is_set():
            try:
                await asyncio.wait_for(self._first_attempt.wait(), timeout)
            except TimeoutError:
                pass

    async def aclose(self) -> None:
        task = getattr(self, "thread", None)
        if isinstance(task, asyncio.Task):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for client in (self._publisher, self._listener):
            if client is not None:
                await _close_quietly(client)
        self._publisher = self._listener = None


async def _close_quietly(*resources: Any) -> None:
    for resource in resources:
        try:
            await resource.aclose()
        except Exception:  # noqa: BLE001, S110 - closing what already failed
            pass


class Realtime:
    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        metrics: Metrics,
        redis_url: str | None,
        cors_origins: list[str],
        channel: str = "outreach",
        session_leeway: float = LEEWAY_SECONDS,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        websocket_only: bool = False,
    ) -> None:
        self.metrics = metrics
        self.session_leeway = session_leeway
        self.connect_timeout = connect_timeout
        # Authenticated sessions (Socket.IO sid) and the timer ending each at its token's expiry.
        self._sessions: dict[str, asyncio.TimerHandle | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._verifier = verifier
        self._origins = frozenset(cors_origins)
        self._redis: ResilientRedisManager | None = None
        manager: socketio.AsyncManager = FanoutManager()
        if redis_url:
            manager = self._redis = ResilientRedisManager(
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
            # No CORS_ALLOW_ORIGINS: no Origin check (tokens, not cookies, authenticate, so a
            # foreign page gains nothing). With it: those origins, and the page's own origin,
            # as for HTTP (engine.io's list mode would refuse a same-origin staff portal).
            cors_allowed_origins=self._origin_allowed if cors_origins else [],
            json=_OrjsonCodec,
            logger=False,
            engineio_logger=False,
            ping_interval=25,
            ping_timeout=20,
            max_http_buffer_size=64 * 1024,
            # Several workers behind one port: a polling session's next request may reach
            # another worker ("Invalid session"), so only WebSocket (one connection, one worker).
            transports=["websocket"] if websocket_only else ["polling", "websocket"],
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        # engine.io has one handler per event, python-socketio's own: ours runs in front of it.
        self._sio_eio_connect = self.sio.eio.handlers["connect"]
        self.sio.eio.on("connect", self._on_eio_connect)

    def _origin_allowed(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        """engine.io's origin check: a configured origin, or the request's own origin (its
        Host, with the scheme the gateway saw in X-Forwarded-Proto or the connection's)."""
        if not origin or origin in self._origins:
            return True
        host = environ.get("HTTP_HOST")
        if not host:
            return False
        schemes = {str(environ.get("wsgi.url_scheme", "http"))}
        forwarded = environ.get("HTTP_X_FORWARDED_PROTO")
        if forwarded:
            schemes.add(str(forwarded).split(",")[0].strip())
        return origin in {f"{scheme}://{host}" for scheme in schemes}

    async def _on_connect(
        self, sid: str, environ: Mapping[str, Any], auth: Any = None
    ) -> bool | None:
        token: str | None = None
        if isinstance(auth, dict) and isinstance(auth.get("token"), str):
            token = auth["token"].strip()
            token = token.removeprefix("Bearer ").strip()
        if not token:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        try:
            principal = await authenticate(self._verifier, token)
        except OutreachError:
            # socketio's own exception: its message reaches the client's `connect_error`
            # (the builtin ConnectionRefusedError arrives as "Connection refused by server").
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from None
        deadline = None
        if principal.expires_at is not None:
            deadline = principal.expires_at + self.session_leeway
            if deadline <= time.time():  # within the verifier's leeway, past the session's
                raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        rooms = [f"role:{role}" for role in principal.roles] + [f"user:{principal.sub}"]
        for room in rooms:
            await self.sio.enter_room(sid, room)
        await self.sio.save_session(sid, {"sub": principal.sub})
        if self._redis is not None:
            await self._redis.wait_first_subscription(FIRST_SUBSCRIBE_WAIT_SECONDS)
        if self.sio.manager.eio_sid_from_sid(sid, "/") not in self.sio.eio.sockets:
            # The transport closed while this waited (no disconnect event comes for a sid still
            # connecting): refused, so that neither the sid nor a timer is left behind.
            return False
        self._sessions[sid] = None
        if deadline is not None:
            # Not sooner than MIN_SESSION_SECONDS: python-socketio ignores a disconnect of a
            # sid whose connect it has not finished (after this handler returns).
            delay = max(deadline - time.time(), MIN_SESSION_SECONDS)
            self._sessions[sid] = asyncio.get_running_loop().call_later(
                delay, self._expire, sid, principal.sub
            )
        self.metrics.realtime_clients.inc()
        log.info("Realtime client connected", sub=principal.sub, rooms=orjson.dumps(rooms).decode())
        return None

    def _expire(self, sid: str, sub: str) -> None:
        """The token has expired: a Socket.IO-level disconnect ("io server disconnect"), after
        which clients do not reconnect by themselves with the same dead token."""
        if sid not in self._sessions:
            return
        del self._sessions[sid]
        self.metrics.realtime_clients.dec()
        log.info("Realtime session expired", sub=sub)
        # ignore_queue: the sid is this replica's own, no need to go through Redis.
        self._spawn(self.sio.disconnect(sid, ignore_queue=True))

    async def _on_disconnect(self, sid: str, *_: Any) -> None:
        if sid in self._sessions:
            timer = self._sessions.pop(sid)
            if timer is not None:
                timer.cancel()
            self.metrics.realtime_clients.dec()
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            # The transport may stay open without a session (a client disconnecting "/" only,
            # or ignoring its expiry): it has the same time as a new one to connect again.
            self._arm_connect_deadline(eio_sid)

    async def _on_eio_connect(self, eio_sid: str, environ: Mapping[str, Any]) -> Any:
        socket_ = self.sio.eio.sockets.get(eio_sid)
        if type(socket_) is AsyncSocket:  # made just now; its writer has not started
            socket_.__class__ = _Socket
        self._arm_connect_deadline(eio_sid)
        return await self._sio_eio_connect(eio_sid, environ)

    def _arm_connect_deadline(self, eio_sid: str) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self.connect_timeout, self._connect_deadline, eio_sid)

    def _connect_deadline(self, eio_sid: str) -> None:
        if eio_sid not in self.sio.eio.sockets:
            return  # closed already
        if self.sio.manager.sid_from_eio_sid(eio_sid, "/") in self._sessions:
            return
        log.info(
            "Realtime transport closed: no authenticated connect", timeout=self.connect_timeout
        )
        self._spawn(self._close_transport(eio_sid))

    async def _close_transport(self, eio_sid: str) -> None:
        """Close one engine.io session: its close packet (`1`) queued, the session gone.

        Not `eio.disconnect(sid)`: that waits until the client has taken the close packet,
        forever for a polling client that never polls again (one hung task each, and a hung
        shutdown). And engine.io ends a websocket only when the client closes it upon that
        packet, or after ping_interval + ping_timeout (45 s): here it is ended at once, as
        engine.io's own reader does at its end (an empty item stops the writer, which sends
        the close packet it has, then closes the websocket).
        """
        eio = self.sio.eio
        socket_ = eio.sockets.get(eio_sid)
        if socket_ is None:
            return
        await socket_.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
        eio.sockets.pop(eio_sid, None)
        if socket_.upgraded:
            socket_.queue.put_nowait(None)

    def _spawn(self, work: Awaitable[Any]) -> None:
        """Run a disconnect in the background (a timer callback cannot await), kept referenced."""

        async def run() -> None:
            try:
                await work
            except Exception as exc:  # noqa: BLE001 - the client is gone either way
                log.warning("Realtime disconnect failed", error=type(exc).__name__)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def emit(
        self, event: str, payload: Mapping[str, Any], rooms: Iterable[str], **fields: Any
    ) -> bool:
        """Send `event` to `rooms`; False (logged and counted) when it could not be published."""
        targets = list(rooms)
        if not targets:
            return True
        try:
            async with asyncio.timeout(EMIT_TIMEOUT_SECONDS):
                await self.sio.emit(event, dict(payload), to=targets)
        except Exception as exc:  # noqa: BLE001 - best effort by contract
            self.metrics.realtime_emit_failures.inc()
            # `_event` is rendered as the field `event` (the message key is `msg`: logging.py).
            log.warning(
                "Socket event service not ready",
                _event=event,
                error=type(exc).__name__,
                **fields,
            )
            return False
        return True

    async def disconnect_all(self) -> None:
        """On shutdown: close every transport, so clients reconnect (to another replica).

        A Socket.IO-level disconnect would tell socket.io-client "io server disconnect", after
        which it does not reconnect by itself; a closed transport ("transport close") does.
        """
        closing = [self._close_transport(eio_sid) for eio_sid in list(self.sio.eio.sockets)]
        for result in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("Realtime disconnect failed", error=type(result).__name__)

    async def close(self) -> None:
        await self.disconnect_all()
        for timer in self._sessions.values():
            if timer is not None:
                timer.cancel()
        self._sessions.clear()
        if self._redis is not None:
            await self._redis.aclose()
