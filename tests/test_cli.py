"""The `outreach` command as an operator runs it: real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from outreach.auth.permissions import SEED_POLICY
from outreach.db.migrate import head_revision
from tests.support import BASE, PG_ADMIN, Server

OUTREACH = [sys.executable, "-m", "outreach.cli"]


def run(
    args: list[str], env: dict[str, str], timeout: float = 60, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("APP_", "DATABASE_", "JWKS_"))
    }
    return subprocess.run(
        [*OUTREACH, *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
    )


@pytest.fixture
async def fresh_pg() -> AsyncIterator[str]:
    name = f"outreach_cli_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


PRODUCTION_COMPLETE = {
    "DATABASE_URL": "postgresql://x@127.0.0.1/db",
    "JWKS_URL": "https://id.example/jwks",
    "JWT_ISSUER": "https://id.example/",
    "JWT_AUDIENCE": "outreach",
    "PUBLIC_BASE_URL": "https://shop.example",
    "TOKEN_SECRET": "s" * 32,
}


def _without(*names: str) -> dict[str, str]:
    return {k: v for k, v in PRODUCTION_COMPLETE.items() if k not in names}


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "DATABASE_URL, JWKS_URL, JWT_ISSUER, JWT_AUDIENCE, PUBLIC_BASE_URL and TOKEN_SECRET"),
        (_without("JWKS_URL"), "set JWKS_URL"),
        (_without("DATABASE_URL"), "set DATABASE_URL"),
        (_without("JWT_ISSUER"), "set JWT_ISSUER"),
        (_without("JWT_AUDIENCE"), "set JWT_AUDIENCE"),
        # Without it the export's unsubscribe links would silently point at 127.0.0.1.
        (_without("PUBLIC_BASE_URL"), "set PUBLIC_BASE_URL"),
        (_without("TOKEN_SECRET"), "set TOKEN_SECRET"),
        (_without("JWT_ISSUER", "TOKEN_SECRET"), "set JWT_ISSUER and TOKEN_SECRET"),
        ({**PRODUCTION_COMPLETE, "CAPTCHA": "altcha"}, "set ALTCHA_HMAC_KEY"),
        # Mail without SMTP_URL would go to .eml files nobody reads (API.md section 12).
        ({**PRODUCTION_COMPLETE, "SUBSCRIBE_CONFIRMATION": "double"}, "SMTP_URL: set it"),
        ({**PRODUCTION_COMPLETE, "INQUIRY_NOTIFY_TO": "staff@shop.example"}, "SMTP_URL: set it"),
        ({**PRODUCTION_COMPLETE, "INQUIRY_ACK": "true"}, "SMTP_URL: set it"),
    ],
)
def test_production_refuses_embedded_defaults(
    tmp_path: Path, env: dict[str, str], missing: str
) -> None:
    result = run(["serve"], {"APP_ENV": "production", "VAR_DIR": str(tmp_path), **env})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert missing in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("name", "value"),
    [("APP_ENV_NODE_ID", "1024"), ("APP_ENV_NODE_ID", "-1"), ("APP_TIMEZONE", "Mars/Base")],
)
def test_bad_settings_stop_start_up_with_one_line(tmp_path: Path, name: str, value: str) -> None:
    result = run(["serve"], {name: value, "VAR_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert name in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SMTP_URL", "http://mail.example"),
        ("MAIL_FROM", "not an address"),
        ("INQUIRY_NOTIFY_TO", "staff@shop.example, nobody"),
        ("SUBSCRIBE_CONFIRMATION", "triple"),
    ],
)
def test_bad_mail_settings_stop_start_up_with_one_line(
    tmp_path: Path, name: str, value: str
) -> None:
    result = run(["serve"], {name: value, "VAR_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert name in result.stderr


def test_a_bad_smtp_url_is_not_repeated(tmp_path: Path) -> None:
    """SMTP_URL may hold a password: an invalid one is refused without echoing it."""
    result = run(["serve"], {"SMTP_URL": "ftp://user:hunter2@mail", "VAR_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout


def test_smtp_url_from_file(tmp_path: Path) -> None:
    from outreach.config import Settings

    secret = tmp_path / "smtp-url"
    secret.write_text("smtps://mailer:s3cret@mail.example:465\n")
    os.environ["SMTP_URL_FILE"] = str(secret)
    try:
        settings = Settings(app_env="test")
    finally:
        del os.environ["SMTP_URL_FILE"]
    assert settings.smtp_url is not None
    assert settings.smtp_url.get_secret_value() == "smtps://mailer:s3cret@mail.example:465"
    assert "s3cret" not in repr(settings)


def test_production_with_smtp_url_starts_mail_settings() -> None:
    from outreach.config import Settings

    values: dict[str, Any] = {k.lower(): v for k, v in PRODUCTION_COMPLETE.items()}
    settings = Settings(
        **values,
        app_env="production",
        subscribe_confirmation="double",
        inquiry_notify_to="staff@shop.example",
        smtp_url="smtp://relay:587",
    )
    settings.check_production()  # no error


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text("sqlite:///" + str(tmp_path / "from-file.db") + "\n")
    result = run(["migrate"], {"DATABASE_URL_FILE": str(secret), "VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-file.db").exists()
    assert str(secret) not in result.stdout


async def test_migrate_twice_and_twice_at_once(fresh_pg: str) -> None:
    env = {"DATABASE_URL": fresh_pg, "LOG_FORMAT": "json"}
    first = await asyncio.to_thread(run, ["migrate"], env)
    assert first.returncode == 0, first.stderr + first.stdout
    assert f"{len(SEED_POLICY)} policy rule(s) added" in first.stdout
    second = await asyncio.to_thread(run, ["migrate"], env)
    assert second.returncode == 0
    assert "0 policy rule(s) added" in second.stdout
    together = await asyncio.gather(*(asyncio.to_thread(run, ["migrate"], env) for _ in range(3)))
    assert [r.returncode for r in together] == [0, 0, 0], [r.stderr for r in together]
    conn = await asyncpg.connect(fresh_pg)
    try:
        assert await conn.fetchval("SELECT count(*) FROM casbin_rule") == len(SEED_POLICY)
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == head_revision()
    finally:
        await conn.close()


async def test_concurrent_first_migrations(fresh_pg: str) -> None:
    env = {"DATABASE_URL": fresh_pg}
    results = await asyncio.gather(*(asyncio.to_thread(run, ["migrate"], env) for _ in range(2)))
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    summaries = [line for r in results for line in r.stdout.splitlines() if "migrated; " in line]
    added = sorted(int(line.split("migrated; ")[1].split()[0]) for line in summaries)
    assert added == [0, len(SEED_POLICY)]


def test_the_head_read_from_the_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from outreach.db.migrate import alembic_config

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_openapi_command_prints_the_document(tmp_path: Path) -> None:
    result = run(["openapi"], {"VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    doc = orjson.loads(result.stdout)
    assert f"{BASE}/inquiries/submit" in doc["paths"]


def test_dev_token_is_refused_in_production(tmp_path: Path) -> None:
    result = run(
        ["dev-token", "--role", "OWNER"],
        {"APP_ENV": "production", **PRODUCTION_COMPLETE, "VAR_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert "dev-token is for development" in result.stderr


def test_serve_logs_logfmt_with_request_id_and_a_dev_token_works(tmp_path: Path) -> None:
    env = {"VAR_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    assert run(["migrate"], env).returncode == 0
    token = run(["dev-token", "--role", "OWNER", "--sub", "alice"], env).stdout.strip()
    server = Server(env)
    try:
        server.wait_ready()
        ready = httpx.get(server.url + "/readyz")
        assert ready.json()["status"] == "ok"
        listed = httpx.get(
            f"{server.url}{BASE}/inquiries",
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": "req-from-portal"},
        )
        assert listed.status_code == 200, listed.text
        bad = httpx.get(f"{server.url}{BASE}/inquiries", headers={"Authorization": "Bearer x.y.z"})
        assert bad.status_code == 401
    finally:
        server.stop()
    lines = server.output().splitlines()
    access = [line for line in lines if "requestId=req-from-portal" in line]
    assert access, server.output()[-3000:]
    assert all(line.startswith("timestamp=") for line in lines if line.strip())
    assert any(f"route={BASE}/inquiries" in line and "status=200" in line for line in access)
    assert token not in server.output()
    assert "x.y.z" not in server.output()


def test_metrics_of_a_running_server_parse(tmp_path: Path) -> None:
    env = {
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'metrics.db'}",
        "METRICS_ENABLED": "true",
    }
    assert run(["migrate"], env).returncode == 0
    server = Server(env)
    try:
        server.wait_ready()
        httpx.post(
            f"{server.url}{BASE}/inquiries/submit",
            json={"name": "M", "email": "m@example.com", "message": "m"},
        )
        httpx.get(f"{server.url}{BASE}/inquiries/42")
        text = httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "http_requests",
        "http_request_duration_seconds",
        "outreach_inquiries_submitted",
        "outreach_subscriber_events",
        "outreach_realtime_emit_failures",
        "outreach_realtime_connected_clients",
        "process_cpu_seconds",
    ):
        assert name in families, name
    routes = {sample.labels["route"] for sample in families["http_requests"].samples}
    assert f"{BASE}/inquiries/{{id}}" in routes
    assert f"{BASE}/inquiries/submit" in routes
    assert not any("42" in route for route in routes)
    submitted = [s.value for s in families["outreach_inquiries_submitted"].samples]
    assert 1.0 in submitted
