"""What the running process holds, as one typed object, and the one dependency that reads it.

`build_state` makes every shared object from the settings (nothing connects yet); `open`
and `close` are the lifespan's halves. Routes and services receive the State (never
`app.state.<name>`), so what a service may use is written in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import httpx
from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from outreach.auth.devkeys import load_or_create_key
from outreach.auth.jwks import JwksCache, KeyProvider, StaticKeys, TokenVerifier
from outreach.auth.permissions import Authorizer
from outreach.captcha.service import Captcha
from outreach.config import Settings
from outreach.core.metrics import Metrics
from outreach.db.base import make_engine, make_sessionmaker
from outreach.db.fast import FastDB, make_fastdb
from outreach.ids.leases import LeasedIds
from outreach.ids.snowflake import SnowflakeGenerator
from outreach.jobs import Registry, Worker, make_worker
from outreach.mail import Mailer
from outreach.outbound.guard import OutboundClient
from outreach.realtime.events import Events
from outreach.realtime.server import Realtime


class RateLimit(Protocol):
    """The optional per-IP limit of the public routes (http/ratelimit.py)."""

    async def check(self, key: str) -> None: ...


class Screen(Protocol):
    """Who may not write through the public POSTs: the blocklist (blocklist/matcher.py)."""

    def blocked(self, email: str, ip: str | None) -> bool: ...


class Component(Protocol):
    """Something of a domain's that runs beside the requests (a reloader, a worker):
    started after the pools are open, stopped before they close."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Open:
    """No screen (the blocklist not wired in, as in some tests): nobody is blocked."""

    def blocked(self, email: str, ip: str | None) -> bool:  # noqa: ARG002
        return False


# What an event must cause that may not be lost (webhook messages), queued in the transaction
# of the change itself: never for a change that rolls back. main.py installs the webhooks
# domain's; the domains call `state.outbox` without knowing who listens.
# `source`: the key of a fan-out done by a job after the change's commit (it may run twice):
# one message per source and endpoint (webhooks/service.py).
class Outbox(Protocol):
    def __call__(
        self,
        session: AsyncSession,
        state: State,
        event: str,
        payload: Mapping[str, Any],
        /,
        *,
        source: str | None = None,
    ) -> Awaitable[None]: ...


async def no_outbox(
    _session: AsyncSession,
    _state: State,
    _event: str,
    _payload: Mapping[str, Any],
    *,
    source: str | None = None,  # noqa: ARG001
) -> None:
    return None


@dataclass(slots=True, eq=False)
class State:
    settings: Settings
    metrics: Metrics
    http: httpx.AsyncClient  # outgoing calls (the JWKS)
    verifier: TokenVerifier
    ids: SnowflakeGenerator | LeasedIds
    engine: AsyncEngine  # SQLAlchemy: the admin routes' ORM sessions
    sessionmaker: async_sessionmaker[AsyncSession]
    fastdb: FastDB  # the hot paths' statements (asyncpg on PostgreSQL)
    redis: Redis | None
    rate_limiter: RateLimit | None
    authorizer: Authorizer
    realtime: Realtime
    events: Events
    captcha: Captcha
    # The job worker of this process (jobs/): domains register their handlers on
    # `jobs.registry` (main.DOMAIN_JOBS); the lifespan starts and stops it.
    jobs: Worker
    mailer: Mailer  # called by the mail jobs' handlers (mail/)
    outbound: OutboundClient  # POSTs to user-given URLs (webhooks), SSRF-guarded
    outbox: Outbox = no_outbox
    screen: Screen = field(default_factory=_Open)
    components: list[Component] = field(default_factory=list)
    shutting_down: bool = False
    # When running jobs must be done by (time.monotonic()): set at the shutdown signal; by
    # default the drain time from the lifespan's end.
    drain_deadline: float = 0.0
    serving: bool = False  # run by `outreach serve` (signals are chained: main.py)
    startup_refused: bool = False  # the worker id could not be leased (logged once)

    def ids_ready(self) -> bool:
        """Whether ids can be made now (lease alive, clock not behind): readiness."""
        return self.ids.ready()


def _verifier(settings: Settings, http: httpx.AsyncClient) -> TokenVerifier:
    keys: KeyProvider
    if settings.jwks_url:
        keys = JwksCache(settings.jwks_url, http)
    else:
        key = load_or_create_key(settings.var_dir)
        keys = StaticKeys({key.kid: key})
    return TokenVerifier(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


def build_state(
    settings: Settings,
    metrics: Metrics,
    ids: SnowflakeGenerator | LeasedIds,
    rate_limiter: RateLimit | None,
) -> State:
    """Every shared object, made from the settings; nothing connects before `open`."""
    http = httpx.AsyncClient(follow_redirects=False)
    verifier = _verifier(settings, http)
    engine = make_engine(settings)
    redis: Redis | None = None
    if settings.redis_dsn:
        redis = Redis.from_url(settings.redis_dsn, socket_timeout=1.0, socket_connect_timeout=1.0)
    realtime = Realtime(
        verifier=verifier,
        metrics=metrics,
        redis_url=settings.redis_dsn,
        cors_origins=settings.cors_allow_origins,
        websocket_only=settings.web_concurrency > 1,
    )
    authorizer = Authorizer(engine)
    fastdb = make_fastdb(engine, settings.sqlalchemy_url, settings.db_pool_size)
    return State(
        settings=settings,
        metrics=metrics,
        http=http,
        verifier=verifier,
        ids=ids,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        fastdb=fastdb,
        redis=redis,
        rate_limiter=rate_limiter,
        authorizer=authorizer,
        realtime=realtime,
        events=Events(realtime, authorizer),
        captcha=Captcha(settings, fastdb, redis),
        jobs=make_worker(
            settings.sqlalchemy_url,
            engine,
            Registry(),
            metrics,
            heartbeat_timeout=settings.jobs_heartbeat_timeout_seconds,
        ),
        mailer=Mailer(settings, fastdb, metrics),
        outbound=OutboundClient(allow_private=settings.webhook_allow_private),
    )


def state_of(request: Request) -> State:
    state: State = request.app.state.outreach
    return state


async def get_state(request: Request) -> State:
    """The process's State, as a dependency (async: a plain one would run in the thread pool)."""
    state: State = request.app.state.outreach
    return state


StateDep = Annotated[State, Depends(get_state)]
