"""The `outreach` command: serve, worker, migrate, seed, erase, retention, openapi, dev-token."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from outreach.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from outreach.state import State

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Outreach service")
# The factory `serve` runs in each worker process. bench/hello.py swaps in a bare ASGI app to
# measure this server's own ceiling with exactly these options.
SERVED_APP = "outreach.main:serve_app"


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"outreach: {exc}", err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def _multiprocess_metrics(enabled: bool) -> Iterator[str | None]:
    """Several workers with METRICS_ENABLED: prometheus_client's multiprocess mode, so that
    /metrics, whichever worker answers, tells the pod's figures (core/metrics.py). The folder
    is PROMETHEUS_MULTIPROC_DIR if set (emptied first: old files would add up), else a new
    one under the temporary folder, removed at the end."""
    if not enabled:
        yield None
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        yield given
        return
    folder = tempfile.mkdtemp(prefix="outreach-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield folder
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(folder, ignore_errors=True)


def _supervisor(config: Any, sockets: list[Any], metrics_dir: str | None) -> Any:
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        """uvicorn's supervisor, which also tells prometheus_client of each worker gone (its
        live gauges, e.g. connected clients, stop counting; its counters stay in the sum)."""

        def __init__(self, config: Any, sockets: list[Any], metrics_dir: str | None) -> None:
            super().__init__(config, sockets)
            self.metrics_dir = metrics_dir

        def keep_subprocess_alive(self) -> None:
            super().keep_subprocess_alive()
            self.forget_dead_workers()

        def forget_dead_workers(self) -> None:
            if self.metrics_dir is None:
                return
            from prometheus_client.multiprocess import mark_process_dead

            from outreach.core.metrics import pids_with_files

            alive = {p.pid for p in self.processes if p.process.is_alive()}
            for pid in pids_with_files(self.metrics_dir) - alive:
                mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    return Supervisor(config, sockets, metrics_dir)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Default PORT or 3000")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes (default WEB_CONCURRENCY or 1)"),
    ] = None,
) -> None:
    """Run the HTTP + Socket.IO server."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from outreach.core.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    workers = workers or settings.web_concurrency
    if settings.worker_id == "auto" and not settings.redis_dsn:
        typer.echo(
            "outreach: APP_ENV_NODE_ID=auto needs REDIS_URL (worker ids are leased in Redis); "
            "set REDIS_URL or a fixed APP_ENV_NODE_ID 0..1023",
            err=True,
        )
        raise typer.Exit(2)
    if workers > 1 and settings.worker_id != "auto":
        typer.echo(
            "outreach: --workers > 1 needs APP_ENV_NODE_ID=auto (with REDIS_URL) so every "
            "worker leases its own Snowflake worker id",
            err=True,
        )
        raise typer.Exit(2)
    config = uvicorn.Config(
        SERVED_APP,
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # client IPs come from TRUSTED_PROXIES only (http/client.py)
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_drain_seconds),
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        ws="websockets-sansio",
        # No permessage-deflate: browsers and Node clients offer it, and compressing each
        # event once per client (zlib keeps a context per connection) was half of the
        # fan-out's time: 1,000 clients, p50 58 -> 28 ms (docs/realtime.md, "Measured").
        # Events are ~1 KB of JSON; the bandwidth saved was not worth it.
        ws_per_message_deflate=False,
    )
    if workers > 1:
        # Every worker process runs the app's lifespan, so each leases its own worker id.
        # The workers are spawned: they inherit this environment, read when they start.
        os.environ["WEB_CONCURRENCY"] = str(workers)  # realtime: WebSocket only
        with _multiprocess_metrics(settings.metrics_enabled) as metrics_dir:
            supervisor = _supervisor(config, [config.bind_socket()], metrics_dir)
            supervisor.run()
        if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
            raise typer.Exit(STARTUP_FAILURE)
        return

    class Server(uvicorn.Server):
        """uvicorn's server, except that a SIGTERM ending in a graceful shutdown exits 0.

        uvicorn re-raises the signals it caught once it has shut down, which would end the
        process *by* SIGTERM (143) after a clean drain. SIGINT is still re-raised.
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals = [
                        s for s in self._captured_signals if s != signal.SIGTERM
                    ]

    server = Server(config)
    try:
        server.run()  # exits STARTUP_FAILURE (3) when the app refuses to start
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise typer.Exit(STARTUP_FAILURE)


@app.command()
def worker(
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (all interfaces)")
    ] = None,
) -> None:
    """Run the job worker alone (mail, webhooks; `serve` runs one in every process too,
    unless JOBS_WORKER=false)."""
    from outreach.core.logging import configure_logging
    from outreach.ids.leases import LeaseError
    from outreach.main import run_worker

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.worker_id == "auto" and not settings.redis_dsn:
        typer.echo(
            "outreach: APP_ENV_NODE_ID=auto needs REDIS_URL (worker ids are leased in Redis); "
            "set REDIS_URL or a fixed APP_ENV_NODE_ID 0..1023 that no replica uses",
            err=True,
        )
        raise typer.Exit(2)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    try:
        asyncio.run(run_worker(settings))
    except LeaseError:
        raise typer.Exit(3) from None  # logged: "Startup refused"


@app.command()
def migrate() -> None:
    """Bring the schema to the newest migration, then run the idempotent seed."""
    from outreach.core.logging import configure_logging
    from outreach.models import migrate as run

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    added = asyncio.run(run(settings))
    typer.echo(f"migrated; {added} policy rule(s) added")


@app.command()
def seed() -> None:
    """Run the idempotent seed (authorization policy) alone."""
    from outreach.core.logging import configure_logging
    from outreach.models import migrate as run

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    added = asyncio.run(run(settings, seed_only=True))
    typer.echo(f"seeded; {added} policy rule(s) added")


@app.command()
def erase(
    email: Annotated[str, typer.Option(help="The data subject's address")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask to confirm")] = False,
) -> None:
    """Irreversibly erase an address's personal data (as POST /privacy/erase does)."""
    from outreach.core.logging import configure_logging
    from outreach.core.schemas import check_email
    from outreach.main import run_one_off
    from outreach.privacy.service import erase as run

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        address = check_email(email.strip())
    except ValueError as exc:
        typer.echo(f"outreach: --email: {exc}", err=True)
        raise typer.Exit(2) from None
    if not yes:
        typer.confirm(
            f"Erase every inquiry and subscriber of {address}? This cannot be undone", abort=True
        )

    async def job(state: State) -> dict[str, int]:
        async with state.sessionmaker() as session, session.begin():
            return await run(session, state, address, "cli")

    counts = asyncio.run(run_one_off(settings, job))
    typer.echo(orjson.dumps(counts).decode())


@app.command()
def retention(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count, erase nothing")] = False,
) -> None:
    """Run the retention job once now (INQUIRY_RETENTION_DAYS), or count what it would erase."""
    from outreach.core.logging import configure_logging
    from outreach.main import run_one_off
    from outreach.privacy import retention as job

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    days = settings.inquiry_retention_days
    if days is None:
        typer.echo("outreach: INQUIRY_RETENTION_DAYS is not set; nothing is due", err=True)
        raise typer.Exit(2)
    count = asyncio.run(
        run_one_off(settings, lambda state: (job.due if dry_run else job.run)(state, days))
    )
    typer.echo(orjson.dumps({"due" if dry_run else "erased": count, "days": days}).decode())


@app.command()
def openapi() -> None:
    """Print the OpenAPI document."""
    from outreach.main import create_app

    document = create_app(_settings()).openapi()
    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


@app.command("dev-token")
def dev_token(
    role: Annotated[list[str], typer.Option(help="Role; repeat for several")],
    sub: Annotated[str, typer.Option(help="Subject (user id)")] = "dev-user",
    ttl: Annotated[int, typer.Option(min=1, max=30 * 86400, help="Seconds")] = 3600,
) -> None:
    """Development only: mint a token signed with the local key under ./var/."""
    from outreach.auth.devkeys import load_or_create_key, mint_token

    settings = _settings()
    if settings.production or settings.jwks_url:
        typer.echo(
            "outreach: dev-token is for development without JWKS_URL; tokens come from the "
            "identity service here",
            err=True,
        )
        raise typer.Exit(2)
    key = load_or_create_key(settings.var_dir)
    typer.echo(
        mint_token(
            key,
            sub=sub,
            roles=[r.upper() for r in role],
            ttl=ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
