"""The `outreach` command: serve, worker, migrate, seed, erase, retention, openapi, dev-token."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING, Annotated

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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Default PORT or 3000")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes")] = 1,
) -> None:
    """Run the HTTP + Socket.IO server."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from outreach.core.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
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
    )
    if workers > 1:
        # Every worker process runs the app's lifespan, so each leases its own worker id.
        from uvicorn.supervisors import Multiprocess

        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
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
