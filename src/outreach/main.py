"""The application: create_app() builds it; the lifespan opens and closes what it uses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any, TypeVar

import socketio
import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outreach import __version__
from outreach.blocklist.matcher import BlocklistScreen
from outreach.blocklist.router import router as blocklist_router
from outreach.config import Settings, get_settings
from outreach.core.errors import Problem
from outreach.core.metrics import get_metrics
from outreach.http.captcha import captcha_router
from outreach.http.docs import docs_router
from outreach.http.errors import install_error_handlers
from outreach.http.hotpath import HEALTHZ, OutreachApp
from outreach.http.middleware import RequestContextMiddleware
from outreach.http.probes import PoolSampler, metrics_router, probe_router, readyz_response
from outreach.http.public import DOCUMENTED_MODELS, PublicFastLane
from outreach.http.ratelimit import make_rate_limiter
from outreach.http.routing import ContentTypeRoute, Handler, Router
from outreach.idempotency.service import purge_expired
from outreach.ids.leases import LeasedIds, LeaseError
from outreach.ids.snowflake import SnowflakeGenerator
from outreach.inquiries import jobs as inquiry_jobs
from outreach.inquiries.router import router as inquiries_router
from outreach.jobs import Registry
from outreach.jobs import purge as purge_jobs
from outreach.privacy import retention
from outreach.privacy.router import router as privacy_router
from outreach.state import State, build_state
from outreach.statistics.router import router as statistics_router
from outreach.subscribers import jobs as subscriber_jobs
from outreach.subscribers.router import router as subscribers_router
from outreach.webhooks.router import router as webhooks_router
from outreach.webhooks.service import register_jobs as register_webhook_jobs
from outreach.webhooks.service import webhook as webhook_service

log = structlog.get_logger("outreach")
T = TypeVar("T")

DOMAIN_ROUTERS: tuple[Router, ...] = (
    inquiries_router,
    subscribers_router,
    statistics_router,
    blocklist_router,
    webhooks_router,
    privacy_router,
)
# Each domain's job handlers (jobs/), registered on the process's worker.
DOMAIN_JOBS: tuple[Callable[[Registry, State], None], ...] = (
    inquiry_jobs.register,
    subscriber_jobs.register,
    register_webhook_jobs,
)
POLICY_RELOAD_SECONDS = 60.0
PURGE_SECONDS = 3600.0

DESCRIPTION = """Inquiries from the website's contact form and newsletter subscribers.

Public routes need no authentication. Admin routes need `Authorization: Bearer <JWT>` (ES256,
from the identity service) with a role the Casbin policy allows. Errors are
`application/problem+json`. Realtime events are on Socket.IO at `{base}/socket.io`.
"""


async def _every(seconds: float, job: Any, name: str, *, first: float | None = None) -> None:
    delay = seconds if first is None else first
    while True:
        await asyncio.sleep(delay)
        delay = seconds
        try:
            await job()
        except Exception as exc:  # noqa: BLE001 - a periodic job must not die
            log.warning("Background job failed", job=name, error=type(exc).__name__)


async def _purge(state: State) -> None:
    """Hourly: expired idempotency keys, the queue's old log, the mailer's old decisions."""
    await purge_expired(state.fastdb)
    await purge_jobs(state.fastdb)
    await state.mailer.purge()
    await state.captcha.purge()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: State = app.state.outreach
    settings = state.settings
    ids = state.ids
    if isinstance(ids, LeasedIds):
        # Before anything else: a process without its worker id must not serve.
        try:
            await ids.start()
        except LeaseError as exc:
            log.error("Startup refused", reason=str(exc))
            state.startup_refused = True
            raise
    await state.fastdb.open()
    if settings.jobs_worker:
        await state.jobs.start()
    try:
        await state.authorizer.load()
    except Exception as exc:  # noqa: BLE001 - start degraded: readiness reports the database
        log.error("Policy could not be loaded", error=type(exc).__name__)
    for component in state.components:
        await component.start()
    tasks = [
        asyncio.create_task(_every(POLICY_RELOAD_SECONDS, state.authorizer.load, "policy")),
        asyncio.create_task(_every(PURGE_SECONDS, lambda: _purge(state), "purge")),
    ]
    if (days := settings.inquiry_retention_days) is not None:
        # Soon after start too: replicas redeployed daily would otherwise never reach a run.
        interval = settings.retention_interval_seconds
        tasks.append(
            asyncio.create_task(
                _every(
                    interval,
                    lambda: retention.run(state, days),
                    "retention",
                    first=min(interval, 60.0),
                )
            )
        )
    # Start-up objects (modules, models, compiled statements) never die: keep them out of
    # the collector's scans, and collect young objects less often (fewer p99 pauses).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    log.info(
        "Outreach started",
        version=__version__,
        env=settings.app_env,
        database="postgresql" if settings.is_postgres else "sqlite",
        redis="on" if settings.redis_dsn else "off",
        workerId=ids.worker_id,
        basePath=settings.base_path,
    )
    if state.serving:
        _drain_on_signals(state)
    try:
        yield
    finally:
        state.shutting_down = True
        for task in tasks:
            task.cancel()
        # Running jobs had the HTTP drain to finish (no new one was taken since the signal);
        # what still runs when the drain time is up is handed back to the queue.
        await state.jobs.stop(max(1.0, state.drain_deadline - time.monotonic()))
        for component in reversed(state.components):
            await component.stop()
        await state.events.drain()
        await state.realtime.close()
        await state.fastdb.close()
        await state.engine.dispose()
        if state.redis is not None:
            await state.redis.aclose()
        await state.http.aclose()
        await state.outbound.aclose()
        if isinstance(ids, LeasedIds):
            await ids.stop()
        log.info("Outreach stopped")


async def run_worker(settings: Settings) -> None:
    """`outreach worker`: the job worker alone (no HTTP), until SIGTERM or SIGINT, which
    let running jobs finish within SHUTDOWN_DRAIN_SECONDS and hand back the rest.

    It runs every domain's jobs as `serve` does, the webhook fan-out and deliveries included
    (State.outbox installed), and those make ids: it takes a Snowflake worker id of its own,
    leased from Redis with APP_ENV_NODE_ID=auto, else the fixed APP_ENV_NODE_ID it is given
    (which no replica may share: docs/operations.md)."""
    ids = LeasedIds(settings.worker_id, settings.redis_dsn, ttl=settings.worker_lease_ttl_seconds)
    try:
        await ids.start()
    except LeaseError as exc:
        log.error("Startup refused", reason=str(exc))
        raise
    state = build_state(settings, get_metrics(), ids, None)
    state.outbox = webhook_service.queue_event  # the fan-out jobs queue webhook messages
    for register in DOMAIN_JOBS:
        register(state.jobs.registry, state)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await state.fastdb.open()
    try:
        await state.jobs.start()
        log.info(
            "Job worker started",
            database="postgresql" if settings.is_postgres else "sqlite",
            kinds=len(state.jobs.registry.kinds()),
            workerId=ids.worker_id,
        )
        await stop.wait()
        log.info("Shutdown requested", drainSeconds=settings.shutdown_drain_seconds)
        await state.jobs.stop(settings.shutdown_drain_seconds)
    finally:
        await state.fastdb.close()
        await state.engine.dispose()
        if state.redis is not None:
            await state.redis.aclose()
        await state.http.aclose()
        await state.outbound.aclose()
        await ids.stop()
        log.info("Job worker stopped")


# The worker id of one-off commands (`outreach erase`, `outreach retention`) without Redis:
# keep it out of APP_ENV_NODE_ID's range for replicas (docs/operations.md).
ONE_OFF_WORKER_ID = 1023


async def run_one_off(settings: Settings, job: Callable[[State], Awaitable[T]]) -> T:
    """A command's work with the service's state: the ids it makes come from a leased worker
    id (with REDIS_URL) or the reserved ONE_OFF_WORKER_ID, never a serving replica's."""
    ids = LeasedIds("auto" if settings.redis_dsn else ONE_OFF_WORKER_ID, settings.redis_dsn)
    await ids.start()
    state = build_state(settings, get_metrics(), ids, None)
    await state.fastdb.open()
    try:
        return await job(state)
    finally:
        await state.fastdb.close()
        await state.engine.dispose()
        if state.redis is not None:
            await state.redis.aclose()
        await state.http.aclose()
        await ids.stop()


def create_app(
    settings: Settings | None = None, *, ids: SnowflakeGenerator | LeasedIds | None = None
) -> FastAPI:
    """The FastAPI application (without the Socket.IO wrapper: see create_asgi)."""
    settings = settings or get_settings()
    base = settings.base_path
    app = FastAPI(
        title="Outreach API",
        version=__version__,
        description=DESCRIPTION.replace("{base}", base),
        lifespan=lifespan,
        # Metrics are Prometheus (core/metrics.py); FastAPI's OpenTelemetry hooks cost ~10 %
        # of a public POST here and export nowhere, so they are off.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.router.route_class = ContentTypeRoute
    # No redirects: `POST .../unsubscribe/` answered 307, which RFC 8058 one-click clients
    # (and many form posts) do not follow. A trailing slash is a 404 like any unknown path.
    app.router.redirect_slashes = False
    if ids is None:
        # Leased (or, without REDIS_URL, a fixed id as is) when the lifespan starts.
        ids = LeasedIds(
            settings.worker_id, settings.redis_dsn, ttl=settings.worker_lease_ttl_seconds
        )
    metrics = get_metrics()
    state = build_state(
        settings,
        metrics,
        ids,
        make_rate_limiter(settings.rate_limit_public, settings.redis_dsn),
    )
    screen = BlocklistScreen(state.fastdb, state.redis)
    state.screen = screen
    state.components.append(screen)
    state.outbox = webhook_service.queue_event  # events become webhook messages
    app.state.outreach = state
    for register in DOMAIN_JOBS:
        register(state.jobs.registry, state)

    install_error_handlers(app)
    app.include_router(probe_router())
    app.include_router(probe_router(), prefix=base)
    if settings.metrics_enabled:
        app.include_router(metrics_router())
        if metrics.multiprocess_dir is not None:  # several workers: core/metrics.py
            state.components.append(PoolSampler(state))
    app.include_router(docs_router(base))
    app.include_router(captcha_router(base, demo=not settings.production))
    lane: dict[str, Handler] = {}
    for router in DOMAIN_ROUTERS:
        app.include_router(router, prefix=base)
        lane.update({base + path: handler for path, handler in router.fast_lane.items()})

    # The hot routes, answered by the outermost callable (`served`, http/hotpath.py).
    hot: dict[tuple[str, str], Handler | object] = {}
    for prefix in ("", base):
        hot[("GET", prefix + "/healthz")] = HEALTHZ
        hot[("GET", prefix + "/readyz")] = readyz_response
    hot.update({("POST", path): handler for path, handler in lane.items()})
    app.state.hot_routes = hot

    # Innermost of ours: the public POSTs served straight from their handlers (http/public.py)
    # where the hot path hands them over (a CORS request) or is not in front (create_app
    # alone).
    app.add_middleware(PublicFastLane, routes=lane)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
            expose_headers=["X-Request-Id", "Retry-After", "Idempotent-Replayed"],
            max_age=600,
        )
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics if settings.metrics_enabled else None
    )
    _install_openapi(app)
    return app


def _install_openapi(app: FastAPI) -> None:
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version="3.1.0",
                description=app.description,
                routes=app.routes,
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            models: list[type[BaseModel]] = [Problem, *DOCUMENTED_MODELS]
            for model in models:
                model_schema = model.model_json_schema(
                    by_alias=True, ref_template="#/components/schemas/{model}"
                )
                schemas.update(model_schema.pop("$defs", {}))
                schemas[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def served(api: FastAPI, inner: ASGIApp | None = None) -> OutreachApp:
    """The hot routes in front of `inner` (the Socket.IO wrapper when served; the FastAPI app
    itself in tests)."""
    state: State = api.state.outreach
    settings = state.settings
    return OutreachApp(
        api,
        inner if inner is not None else api,
        state=state,
        routes=api.state.hot_routes,
        metrics=state.metrics if settings.metrics_enabled else None,
        cors=bool(settings.cors_allow_origins),
    )


def create_asgi(settings: Settings | None = None, **kwargs: Any) -> OutreachApp:
    """The served application: the hot routes (http/hotpath.py), then Socket.IO at
    {base}/socket.io wrapping the FastAPI app."""
    settings = settings or get_settings()
    api = create_app(settings, **kwargs)
    wrapper = socketio.ASGIApp(
        api.state.outreach.realtime.sio,
        other_asgi_app=api,
        socketio_path=f"{settings.base_path.strip('/')}/socket.io",
    )
    return served(api, wrapper)


def serve_app() -> ASGIApp:
    """Factory for `outreach serve` (each worker process calls it)."""
    from outreach.config import load_settings
    from outreach.core.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_asgi(settings)
    api = app.api
    assert isinstance(api, FastAPI)
    state: State = api.state.outreach
    state.serving = True  # the lifespan chains the shutdown signals (_drain_on_signals)
    # The hot routes add `Connection: close` themselves while shutting down.
    api.add_middleware(_ServeGuard, state=state)
    return app


def _drain_on_signals(state: State) -> None:
    """Graceful shutdown, chained in front of uvicorn's own SIGTERM/SIGINT handling.

    Called at the end of start-up, inside uvicorn's `capture_signals`: the handlers found are
    uvicorn's `Server.handle_exit`. On the first signal `/readyz` answers 503 at once (and
    every answer carries `Connection: close`); after SHUTDOWN_READY_DELAY_SECONDS (SIGTERM
    only) Socket.IO clients are disconnected and uvicorn's handler runs: it stops accepting,
    lets in-flight requests finish within SHUTDOWN_DRAIN_SECONDS, then runs the lifespan's
    shutdown. A second signal goes straight to uvicorn (a second Ctrl+C forces the exit).
    uvicorn restores the original handlers when it returns.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    delay = state.settings.shutdown_ready_delay_seconds
    handed_over = False
    disconnecting: list[asyncio.Task[None]] = []  # referenced until done

    def hand_over(then: Any, sig: int) -> None:
        nonlocal handed_over
        if handed_over:
            return
        handed_over = True
        disconnecting.append(loop.create_task(state.realtime.disconnect_all()))
        then(sig, None)

    def begin(then: Any, sig: int) -> None:
        wait = delay if sig == signal.SIGTERM else 0.0
        state.jobs.begin_stop()  # running jobs go on; no new one is taken
        state.drain_deadline = time.monotonic() + wait + state.settings.shutdown_drain_seconds
        log.info(
            "Shutdown requested",
            signal=signal.Signals(sig).name,
            readyDelaySeconds=wait,
            drainSeconds=state.settings.shutdown_drain_seconds,
        )
        loop.call_later(wait, hand_over, then, sig)

    def chain(sig: signal.Signals) -> None:
        then = signal.getsignal(sig)
        if not callable(then):
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            # Runs between two bytecodes of the main thread: only flip a flag and wake the loop.
            if state.shutting_down:
                then(signum, frame)
                return
            state.shutting_down = True
            loop.call_soon_threadsafe(begin, then, signum)

        signal.signal(sig, handler)

    chain(signal.SIGTERM)
    chain(signal.SIGINT)


class _ServeGuard:
    """Around the served app only (`serve_app`).

    While shutting down every HTTP answer carries `Connection: close`, so keep-alive clients
    (the gateway) open their next request elsewhere. A start refused for a worker id (already
    logged as one clear line) is not repeated by uvicorn as a traceback.
    """

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and self.state.shutting_down:

            async def closing(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [*message.get("headers", ()), (b"connection", b"close")]
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, closing)
        elif kind == "lifespan":

            async def quiet(message: Message) -> None:
                if message["type"] == "lifespan.startup.failed" and self.state.startup_refused:
                    message = {"type": "lifespan.startup.failed", "message": ""}
                await send(message)

            await self.app(scope, receive, quiet)
        else:
            await self.app(scope, receive, send)
