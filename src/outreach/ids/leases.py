"""Snowflake worker ids leased in Redis, so that no two live processes ever share one.

Every process holds its worker id as a Redis key `outreach:worker:<id>` whose value is the
process's holder token (random + hostname + pid) and whose TTL is the lease (30 s by default):

* `APP_ENV_NODE_ID=auto` takes the first free id 0..1023 (`SET key holder NX PX ttl`), scanning
  from a random start so that replicas starting together rarely try the same id twice;
* a fixed id is registered the same way, and a second live process asking for it refuses to
  start (`LeaseError`, one line naming the id);
* a background task renews the lease every ttl/3 with a compare-and-extend script (only while
  the value is still our token). The process issues ids only while its lease is known to be
  alive: the local deadline is measured from when the last successful renewal was *sent*
  (minus a margin), which is always before Redis lets the key expire. Past it `next_id()`
  raises `IdsUnavailable` (HTTP 503) and `ready()` is false (`/readyz` 503): never a duplicate.
  When renewal works again and the key is still ours, or is free and can be taken again, ids
  resume; under `auto` a key taken by someone else meanwhile makes the process lease another id;
* on clean shutdown the key is deleted by a compare-and-delete script.

Without REDIS_URL a fixed id works as before, unregistered (logged); `auto` is refused.
A fixed id also keeps working while Redis is unreachable (API.md: Redis down degrades
realtime only): its uniqueness is the configuration's promise, the registry only catches a
second process configured with the same id. Under `auto` the id *comes* from Redis, so the
strict rule above applies.

Limit: a Redis that loses its data (restart without persistence, failover to a replica that
missed the writes) forgets the leases; a process starting right then can take an id a live one
still holds, and both issue ids until the live one's next renewal (at most ttl/3) sees the key
taken and stops. Run the lease Redis with persistence (AOF) if that window matters.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any, Literal

import structlog

from outreach.core.errors import Unavailable
from outreach.ids.snowflake import MAX_WORKER_ID, SnowflakeGenerator

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "LEASE_PREFIX",
    "IdsUnavailable",
    "LeaseError",
    "LeasedIds",
    "holder_token",
]

LEASE_PREFIX = "outreach:worker:"
DEFAULT_TTL_SECONDS = 30.0
# How long start-up keeps trying when Redis does not answer, at most.
MAX_ACQUIRE_WAIT_SECONDS = 10.0

log = structlog.get_logger("outreach.leases")

# 1: still ours, extended. 2: the key was gone (expired while Redis was out of reach, or lost
# with Redis's data) and is ours again. 0: someone else holds it.
_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_REDIS_DOWN: tuple[type[BaseException], ...] = (OSError, TimeoutError)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, *_REDIS_DOWN)


class LeaseError(RuntimeError):
    """The process must not start: its worker id cannot be leased. The message is one line."""


class IdsUnavailable(Unavailable):
    slug, title = "ids-unavailable", "Id generation unavailable"


def holder_token() -> str:
    """`<hostname>:<pid>:<random>`: names the holder for operators, unique even across pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


def _who(token: bytes | str | None) -> str:
    """The holder as an operator reads it (host:pid), without the random part."""
    if token is None:
        return "unknown"
    text = token.decode(errors="replace") if isinstance(token, bytes) else token
    return text.rsplit(":", 1)[0] if text.count(":") >= 2 else text


class LeasedIds:
    """A Snowflake generator that issues ids only while its worker id lease is alive.

    Compatible with SnowflakeGenerator where services use it: `next_id()` and `worker_id`.
    Call `start()` before serving (leases the id, starts renewing) and `stop()` at the end.
    """

    def __init__(
        self,
        worker: int | Literal["auto"],
        redis_url: str | None,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        prefix: str = LEASE_PREFIX,
        acquire_wait: float | None = None,
        holder: str | None = None,
    ) -> None:
        if worker != "auto" and not (
            isinstance(worker, int)
            and not isinstance(worker, bool)
            and 0 <= worker <= MAX_WORKER_ID
        ):
            raise ValueError(f"worker must be 'auto' or an int 0..{MAX_WORKER_ID}, got {worker!r}")
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        self.requested = worker
        self.ttl = float(ttl)
        self.prefix = prefix
        self.holder = holder or holder_token()
        self._redis_url = redis_url
        self._ttl_ms = max(1, int(self.ttl * 1000))
        # Renew three times per TTL; on failure retry often enough to notice recovery quickly.
        self._interval = self.ttl / 3
        self._retry = min(1.0, self.ttl / 6)
        # A lease is trusted until (time the renewal was sent) + ttl - margin: Redis starts its
        # TTL when it runs the command, later than that, so the key outlives our trust in it.
        self._margin = min(1.0, self.ttl / 10)
        self._timeout = min(2.0, self.ttl / 5)
        self._acquire_wait = (
            acquire_wait if acquire_wait is not None else min(self.ttl, MAX_ACQUIRE_WAIT_SECONDS)
        )
        self._redis: Redis | None = None
        self._renew: Any = None
        self._release: Any = None
        self._task: asyncio.Task[None] | None = None
        self._gen: SnowflakeGenerator | None = None
        self._generators: dict[int, SnowflakeGenerator] = {}
        self._valid_until = 0.0
        self._registered = False
        self._failing = False  # a renewal failed; logged once per outage
        self._lost = False  # ids stopped; logged once per loss
        if redis_url is None and worker != "auto":
            # Nothing to register with: the fixed id is trusted, as without leases.
            self._use(worker)
            self._valid_until = math.inf

    # -- what services use ------------------------------------------------------------------

    @property
    def worker_id(self) -> int:
        if self._gen is not None:
            return self._gen.worker_id
        if self.requested != "auto":
            return self.requested
        raise RuntimeError("no worker id leased yet: call start() first")

    def next_id(self) -> int:
        """The next id, or IdsUnavailable (HTTP 503) while the lease is not known to be alive."""
        gen = self._gen
        if gen is None or time.monotonic() >= self._valid_until:
            raise IdsUnavailable(
                "This instance cannot issue ids right now (its worker id lease is not "
                "confirmed); try again shortly"
            )
        return gen.next_id()

    def ready(self) -> bool:
        """For /readyz: false while next_id() would fail."""
        gen = self._gen
        return gen is not None and time.monotonic() < self._valid_until and gen.ready()

    @property
    def key(self) -> str:
        return f"{self.prefix}{self.worker_id}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Lease the worker id (LeaseError if it cannot be) and start renewing it."""
        if self._redis_url is None:
            if self.requested == "auto":
                raise LeaseError(
                    "APP_ENV_NODE_ID=auto needs REDIS_URL: worker ids are leased in Redis "
                    "(set REDIS_URL, or give this process a fixed APP_ENV_NODE_ID 0..1023)"
                )
            log.info(
                "Worker id not registered",
                workerId=self.requested,
                reason="no REDIS_URL: nothing checks that no other process uses this id",
            )
            return
        try:
            await self.acquire()
        except BaseException:
            await self._close()
            raise
        self._task = asyncio.create_task(self._run(), name="worker-id-lease")

    async def acquire(self) -> None:
        """Take the lease: the fixed id, or a free one under `auto`. LeaseError otherwise."""
        self._connect()
        deadline = time.monotonic() + self._acquire_wait
        while True:
            try:
                got = await self._take()
                break
            except _redis_errors() as exc:
                if self.requested != "auto":
                    # A fixed id is the operator's promise; the registry only catches a
                    # mistake. Redis being down degrades realtime only (API.md section 2).
                    log.warning(
                        "Worker id not registered",
                        workerId=self.requested,
                        reason=f"Redis does not answer ({type(exc).__name__}); will retry",
                    )
                    self._use(self.requested)
                    self._valid_until = math.inf
                    return
                if time.monotonic() >= deadline:
                    raise LeaseError(
                        f"APP_ENV_NODE_ID={self.requested}: cannot lease a worker id, Redis "
                        f"(REDIS_URL) does not answer ({type(exc).__name__}) after "
                        f"{self._acquire_wait:g} s"
                    ) from None
                await asyncio.sleep(min(0.5, self._retry))
        if got is None:
            if self.requested == "auto":
                raise LeaseError(
                    f"APP_ENV_NODE_ID=auto: no free worker id, all {MAX_WORKER_ID + 1} are "
                    f"leased under {self.prefix}*"
                )
            holder = await self._holder_of(self.requested)
            raise LeaseError(
                f"APP_ENV_NODE_ID={self.requested}: worker id {self.requested} is already "
                f"leased by another live process ({_who(holder)}); give each process its own "
                f"id or use APP_ENV_NODE_ID=auto"
            )
        log.info(
            "Worker id leased",
            workerId=got,
            mode="auto" if self.requested == "auto" else "fixed",
            ttlSeconds=self.ttl,
        )

    async def stop(self) -> None:
        """Stop renewing and release the key (only if it is still ours)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._redis_url is not None:
            self._valid_until = 0.0
        if self._redis is None:
            return
        try:
            if self._registered and self._gen is not None:
                async with asyncio.timeout(self._timeout * 2):
                    deleted = await self._release(keys=[self.key], args=[self.holder])
                if deleted:
                    log.info("Worker id released", workerId=self._gen.worker_id)
        except _redis_errors() as exc:
            log.warning(
                "Worker id release failed",
                workerId=self.worker_id,
                error=type(exc).__name__,
                detail="the lease expires by itself",
            )
        finally:
            await self._close()

    async def _close(self) -> None:
        self._registered = False
        redis, self._redis = self._redis, None
        if redis is not None:
            try:
                await redis.aclose()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    # -- renewal --------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._interval
        while True:
            await asyncio.sleep(delay)
            try:
                ok = await self.renew_once()
            except Exception as exc:  # noqa: BLE001 - the renewal loop must not die
                log.error("Worker id lease renewal crashed", error=type(exc).__name__)
                ok = False
            delay = self._interval if ok else self._retry

    async def renew_once(self) -> bool:
        """Extend the lease (or take the id again if its key is free). True if ids may flow."""
        assert self._gen is not None
        assert self._redis is not None
        worker = self._gen.worker_id
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout * 2):
                result = int(await self._renew(keys=[self.key], args=[self.holder, self._ttl_ms]))
        except _redis_errors() as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "Worker id lease renewal failed",
                    workerId=worker,
                    error=type(exc).__name__,
                    secondsLeft=round(max(0.0, self._valid_until - time.monotonic()), 3),
                )
            if self.requested != "auto":
                self._valid_until = math.inf  # fixed id: keep issuing (see acquire())
                return False
            if time.monotonic() >= self._valid_until:
                self._mark_lost(worker, "Redis does not answer; the lease may have expired")
            return False
        self._failing = False
        if result in (1, 2):
            self._valid_until = sent + self.ttl - self._margin
            if result == 2 and not self._lost:
                log.warning("Worker id lease was missing in Redis; taken again", workerId=worker)
            if self._lost:
                self._lost = False
                log.info("Worker id lease restored; issuing ids again", workerId=worker)
            return True
        # Someone else holds our key: stop at once.
        self._valid_until = 0.0
        holder = await self._holder_of(worker)
        self._mark_lost(worker, f"the key is now held by {_who(holder)}")
        if self.requested == "auto":
            try:
                got = await self._take()
            except _redis_errors():
                return False
            if got is not None:
                self._lost = False
                log.info("Worker id leased", workerId=got, mode="auto", previousWorkerId=worker)
                return True
        return False

    def _mark_lost(self, worker: int, reason: str) -> None:
        self._valid_until = min(self._valid_until, 0.0)
        if not self._lost:
            self._lost = True
            log.error("Worker id lease lost; not issuing ids", workerId=worker, reason=reason)

    # -- Redis ----------------------------------------------------------------------------------

    def _connect(self) -> None:
        if self._redis is not None:
            return
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert self._redis_url is not None
        # No silent retries inside the client: the renewal loop retries, and must know.
        self._redis = Redis.from_url(
            self._redis_url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)

    async def _take(self) -> int | None:
        """SET NX the requested id, or under `auto` the first free one from a random start."""
        assert self._redis is not None
        if self.requested == "auto":
            start = random.randrange(MAX_WORKER_ID + 1)  # spreads replicas; no secrecy needed
            candidates = [(start + i) % (MAX_WORKER_ID + 1) for i in range(MAX_WORKER_ID + 1)]
        else:
            candidates = [self.requested]
        for worker in candidates:
            sent = time.monotonic()
            async with asyncio.timeout(self._timeout * 2):
                taken = await self._redis.set(
                    f"{self.prefix}{worker}", self.holder, nx=True, px=self._ttl_ms
                )
            if taken:
                self._use(worker)
                self._registered = True
                self._valid_until = sent + self.ttl - self._margin
                return worker
        return None

    async def _holder_of(self, worker: int) -> bytes | str | None:
        assert self._redis is not None
        try:
            async with asyncio.timeout(self._timeout * 2):
                value: bytes | str | None = await self._redis.get(f"{self.prefix}{worker}")
        except _redis_errors():
            return None
        return value

    def _use(self, worker: int) -> None:
        # One generator per id for the life of the process: if the id comes back to us, its
        # ids stay strictly increasing.
        gen = self._generators.get(worker)
        if gen is None:
            gen = self._generators[worker] = SnowflakeGenerator(worker)
        self._gen = gen
