"""The application: create_app() builds it; the lifespan opens and closes what it uses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import socketio
import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel
from starlette.types import ASGIApp

from outreach import __version__
from outreach.auth.devkeys import load_or_create_key
from outreach.auth.jwks import JwksCache, KeyProvider, StaticKeys, TokenVerifier
from outreach.auth.permissions import Authorizer
from outreach.config import Settings, get_settings
from outreach.core.docs import docs_router
from outreach.core.errors import Problem, install_error_handlers
from outreach.core.events import Events
from outreach.core.fastdb import make_fastdb
from outreach.core.http import RequestContextMiddleware
from outreach.core.idempotency import purge_expired
from outreach.core.ids import SnowflakeGenerator
from outreach.core.metrics import get_metrics
from outreach.core.probes import metrics_router, probe_router
from outreach.core.public import DOCUMENTED_MODELS, PublicFastLane
from outreach.core.ratelimit import make_rate_limiter
from outreach.core.realtime import Realtime
from outreach.core.routing import ContentTypeRoute
from outreach.core.runtime import Runtime
from outreach.db import make_engine, make_sessionmaker
from outreach.inquiries.router import router as inquiries_router
from outreach.inquiries.router import submit_inquiry
from outreach.statistics.router import router as statistics_router
from outreach.subscribers.router import router as subscribers_router
from outreach.subscribers.router import subscribe, unsubscribe

log = structlog.get_logger("outreach")

POLICY_RELOAD_SECONDS = 60.0
PURGE_SECONDS = 3600.0

DESCRIPTION = """Inquiries from the website's contact form and newsletter subscribers.

Public routes need no authentication. Admin routes need `Authorization: Bearer <JWT>` (ES256,
from the identity service) with a role the Casbin policy allows. Errors are
`application/problem+json`. Realtime events are on Socket.IO at `{base}/socket.io`.
"""


def _verifier(settings: Settings, http: httpx.AsyncClient) -> TokenVerifier:
    keys: KeyProvider
    if settings.jwks_url:
        keys = JwksCache(settings.jwks_url, http)
    else:
        key = load_or_create_key(settings.var_dir)
        keys = StaticKeys({key.kid: key})
    return TokenVerifier(keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


async def _every(seconds: float, job: Any, name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception as exc:  # noqa: BLE001 - a periodic job must not die
            log.warning("Background job failed", job=name, error=type(exc).__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    settings: Settings = state.settings
    state.engine = make_engine(settings)
    state.sessionmaker = make_sessionmaker(state.engine)
    state.fastdb = make_fastdb(state.engine, settings.sqlalchemy_url, settings.db_pool_size)
    state.redis = None
    if settings.redis_dsn:
        from redis.asyncio import Redis

        state.redis = Redis.from_url(
            settings.redis_dsn, socket_timeout=1.0, socket_connect_timeout=1.0
        )
    state.rate_limiter = make_rate_limiter(settings.rate_limit_public, settings.redis_dsn)
    await state.fastdb.open()
    state.authorizer = Authorizer(state.engine)
    try:
        await state.authorizer.load()
    except Exception as exc:  # noqa: BLE001 - start degraded: readiness reports the database
        log.error("Policy could not be loaded", error=type(exc).__name__)
    state.events = Events(state.realtime, state.authorizer)
    state.runtime = Runtime(
        settings=settings,
        fastdb=state.fastdb,
        ids=state.ids,
        events=state.events,
        metrics=state.metrics,
        authorizer=state.authorizer,
    )
    tasks = [
        asyncio.create_task(_every(POLICY_RELOAD_SECONDS, state.authorizer.load, "policy")),
        asyncio.create_task(
            _every(PURGE_SECONDS, lambda: purge_expired(state.fastdb), "idempotency-purge")
        ),
    ]
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
        workerId=state.ids.worker_id,
        basePath=settings.base_path,
    )
    try:
        yield
    finally:
        state.shutting_down = True
        for task in tasks:
            task.cancel()
        await state.events.drain()
        await state.realtime.close()
        await state.fastdb.close()
        await state.engine.dispose()
        if state.redis is not None:
            await state.redis.aclose()
        await state.http.aclose()
        log.info("Outreach stopped")


def create_app(
    settings: Settings | None = None, *, ids: SnowflakeGenerator | None = None
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
    metrics = get_metrics()
    state = app.state
    state.settings = settings
    state.metrics = metrics
    state.shutting_down = False
    state.http = httpx.AsyncClient(follow_redirects=False)
    state.verifier = _verifier(settings, state.http)
    state.realtime = Realtime(
        verifier=state.verifier,
        metrics=metrics,
        redis_url=settings.redis_dsn,
        cors_origins=settings.cors_allow_origins,
    )
    if ids is None:
        worker = settings.worker_id
        if worker == "auto":
            raise NotImplementedError("APP_ENV_NODE_ID=auto is leased in serve (core/leases.py)")
        ids = SnowflakeGenerator(worker)
    state.ids = ids
    state.ids_ready = lambda: True

    install_error_handlers(app)
    app.include_router(probe_router())
    app.include_router(probe_router(), prefix=base)
    if settings.metrics_enabled:
        app.include_router(metrics_router())
    app.include_router(docs_router(base))
    app.include_router(inquiries_router, prefix=base)
    app.include_router(subscribers_router, prefix=base)
    app.include_router(statistics_router, prefix=base)

    # Innermost of ours: the public POSTs served straight from their handlers (core/public.py).
    app.add_middleware(
        PublicFastLane,
        routes={
            f"{base}/inquiries/submit": submit_inquiry,
            f"{base}/subscribers/subscribe": subscribe,
            f"{base}/subscribers/unsubscribe": unsubscribe,
        },
    )
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


def create_asgi(settings: Settings | None = None, **kwargs: Any) -> ASGIApp:
    """The served application: Socket.IO at {base}/socket.io wrapping the FastAPI app."""
    settings = settings or get_settings()
    api = create_app(settings, **kwargs)
    wrapper = socketio.ASGIApp(
        api.state.realtime.sio,
        other_asgi_app=api,
        socketio_path=f"{settings.base_path.strip('/')}/socket.io",
    )
    wrapper.api = api
    return wrapper  # type: ignore[no-any-return]


def serve_app() -> ASGIApp:
    """Factory for `outreach serve` (each worker process calls it)."""
    from outreach.config import load_settings
    from outreach.core.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_asgi(settings)
