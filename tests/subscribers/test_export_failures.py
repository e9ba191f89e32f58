"""The CSV export when the database fails: before the first row a proper error answer, after
some rows a broken download (never a short file that looks complete), and both logged."""

from __future__ import annotations

import asyncio
import csv
import io
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import structlog
from sqlalchemy.ext.asyncio import create_async_engine

from outreach.auth.devkeys import load_or_create_key, mint_token
from outreach.models import migrate
from tests.subscribers.helpers import SUBSCRIBERS, assert_problem
from tests.support import BASE, PG_ADMIN, Api, Server, make_settings, unique_email

EXPORT = f"{SUBSCRIBERS}/export"
HEADER = "id,email,name,status,source,subscribedAt,unsubscribedAt,unsubscribeUrl"


def ends(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e.get("event", e.get("msg")) == "Subscribers exported"]


def starts(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e.get("event", e.get("msg")) == "Subscribers export started"]


# ---- a failure before the first row: an error answer, nothing streamed --------------------


@pytest.fixture
async def down_engine(api: Api, tmp_path: Path) -> AsyncIterator[None]:
    """The app's export engine replaced by one whose database cannot be reached."""
    if api.settings.is_postgres:
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/outreach"  # nothing listens there
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'outreach.db'}"
    engine = create_async_engine(url, connect_args={"timeout": 2} if "postgresql" in url else {})
    real = api.state.engine
    api.state.engine = engine
    yield
    api.state.engine = real
    await engine.dispose()


@pytest.mark.usefixtures("down_engine")
async def test_database_down_at_the_start_answers_503_and_logs_failed(api: Api) -> None:
    marker = uuid.uuid4().hex
    with structlog.testing.capture_logs() as logs:
        response = await api.client.get(
            EXPORT, params={"q": marker, "status": "ACTIVE"}, headers=api.owner
        )
    assert_problem(response, 503, "database-unavailable")
    assert response.headers["retry-after"]
    [start] = starts(logs)
    assert start["exportedBy"] == "owner-1"
    assert (start["status"], start["search"], start["order"]) == ("ACTIVE", True, "desc")
    [end] = ends(logs)
    assert (end["exportedBy"], end["rows"], end["outcome"]) == ("owner-1", 0, "failed")
    assert marker not in repr(logs)  # the search text is personal data


async def test_a_statement_failing_at_the_start_answers_500(pg_api: Api) -> None:
    # The administration database has no subscribers table: the export's query fails.
    engine = create_async_engine(PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://"))
    real = pg_api.state.engine
    pg_api.state.engine = engine
    try:
        with structlog.testing.capture_logs() as logs:
            response = await pg_api.client.get(EXPORT, headers=pg_api.owner)
    finally:
        pg_api.state.engine = real
        await engine.dispose()
    assert_problem(response, 500, "internal-error")
    assert "subscribers" not in response.text  # no SQL in the answer
    assert len(starts(logs)) == 1
    [end] = ends(logs)
    assert (end["rows"], end["outcome"]) == (0, "failed")


async def test_a_complete_export_logs_start_and_end(pg_api: Api) -> None:
    marker = uuid.uuid4().hex
    for _ in range(2):
        created = await pg_api.client.post(
            SUBSCRIBERS, json={"email": unique_email(marker)}, headers=pg_api.owner
        )
        assert created.status_code == 201
    with structlog.testing.capture_logs() as logs:
        response = await pg_api.client.get(
            EXPORT, params={"q": marker, "createdFrom": "2020-01-01"}, headers=pg_api.owner
        )
    assert response.status_code == 200
    assert len(response.text.splitlines()) == 3
    [start] = starts(logs)
    assert start["createdFrom"] == "2020-01-01T00:00:00.000Z"
    [end] = ends(logs)
    assert (end["rows"], end["outcome"]) == (2, "complete")
    assert "status" not in start  # no status filter given
    assert marker not in repr(logs)


# ---- a failure after some rows: the connection is cut, against a real server ---------------


RECEIVE_BUFFER = 65_536
ROW_BYTES = 190  # about one exported row of the PostgreSQL test


def rows_beyond_socket_buffers() -> int:
    """Rows whose CSV is three times what the sockets can hold before the server blocks on
    sending (its send buffer, at most tcp_wmem's maximum, and the client's receive buffer):
    the export is still running whenever the client stops reading."""
    try:
        send_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        send_max = 4 * 1024 * 1024
    return max(30_000, 3 * (send_max + 2 * RECEIVE_BUFFER) // ROW_BYTES)


def server_for(database_url: str, var_dir: Path) -> tuple[Server, dict[str, str]]:
    server = Server(
        {
            "DATABASE_URL": database_url,
            "VAR_DIR": str(var_dir),
            "PUBLIC_BASE_URL": "https://shop.example",
            "LOG_FORMAT": "json",
        }
    )
    server.wait_ready()
    token = mint_token(load_or_create_key(var_dir), sub="owner-9", roles=["OWNER"])
    return server, {"Authorization": f"Bearer {token}"}


def server_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for line in server.output().splitlines():
        try:
            lines.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            lines.append({"msg": line})
    return lines


def data_rows(received: bytes) -> list[list[str]]:
    """The CSV rows of what arrived (every chunk ends at a row's end)."""
    text = received.decode()
    assert text.startswith(HEADER + "\r\n")
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[1:]


def assert_cut_and_logged(server: Server, received: bytes, total: int) -> None:
    rows = data_rows(received)
    assert 0 < len(rows) < total
    # The server waits a moment for its log line after the connection closed.
    lines = server_lines(server)
    [end] = ends(lines)
    assert (end["exportedBy"], end["outcome"]) == ("owner-9", "failed")
    # The count is what the client got: every chunk handed out arrived before the cut.
    assert end["rows"] == len(rows)
    assert len(starts(lines)) == 1
    output = server.output()
    # Nothing tried to answer again once the response had started.
    assert "response already started" not in output
    assert "Caught handled exception" not in output
    assert sum(1 for e in lines if e.get("msg") == "request") == 2  # readiness probe + export
    tokens = {row[7].rsplit("token=", 1)[1] for row in rows}
    assert not any(t in output for t in tokens)


async def read_until_cut(
    response: httpx.Response, pause: Callable[[], Awaitable[None]] | None = None
) -> bytes:
    """The body's bytes until the read fails; `pause` runs once, after the first chunk."""
    received = b""
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # noqa: PT012
        async for chunk in response.aiter_raw():
            received += chunk
            if pause is not None:
                await pause()
                pause = None
    return received


async def test_sqlite_row_failing_mid_stream_cuts_the_download(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    url = f"sqlite:///{var_dir / 'export.db'}"
    await migrate(make_settings(url, var_dir))
    total, bad = 4000, 1500  # newest first: 2,500 good rows, then one the driver cannot read
    engine = create_async_engine(url.replace("sqlite://", "sqlite+aiosqlite://"))
    async with engine.begin() as conn:
        driver = await conn.get_raw_connection()
        raw: Any = driver.driver_connection
        await raw.executemany(
            "INSERT INTO subscribers (id, email, status, subscribed_at, unsubscribe_selector,"
            " search_text, created_at, updated_at) VALUES (?, ?, 'ACTIVE',"
            " '2026-11-01 00:00:00.000000', ?, ?, '2026-11-01 00:00:00.000000',"
            " '2026-11-01 00:00:00.000000')",
            [
                (i, f"row{i}@example.com", f"sel{i:019d}", f"row{i}@example.com")
                for i in range(1, total + 1)
            ],
        )
        # Not UTF-8: reading this row raises in the driver, part-way through the stream.
        await raw.execute("UPDATE subscribers SET name = CAST(x'ff' AS TEXT) WHERE id = ?", (bad,))
    await engine.dispose()

    server, owner = server_for(url, var_dir)
    try:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=20) as client,
            client.stream("GET", f"{BASE}/subscribers/export", headers=owner) as response,
        ):
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            received = await read_until_cut(response)
        await asyncio.sleep(0.3)
        assert_cut_and_logged(server, received, total - bad)
        assert "Could not decode" not in server.output()  # the driver's text quotes the row
    finally:
        server.stop()


async def test_postgres_connection_killed_mid_stream_cuts_the_download(
    fresh_pg: str, tmp_path: Path
) -> None:
    var_dir = tmp_path / "var"
    await migrate(make_settings(fresh_pg, var_dir))
    total = rows_beyond_socket_buffers()
    conn = await asyncpg.connect(fresh_pg)
    try:
        await conn.execute(
            "INSERT INTO subscribers (id, email, status, subscribed_at, unsubscribe_selector,"
            " search_text, created_at, updated_at)"
            " SELECT g, 'row' || g || '@example.com', 'ACTIVE', now(), lpad(g::text, 22, 's'),"
            " 'row' || g, now(), now() FROM generate_series(1, $1) AS g",
            total,
        )
    finally:
        await conn.close()

    server, owner = server_for(fresh_pg, var_dir)
    killed: list[bool] = []

    async def kill_the_export_connection() -> None:
        # The client has stopped reading: the server can run ahead by its socket buffers
        # at most, then blocks on sending, its cursor open. Kill that connection.
        other = await asyncpg.connect(fresh_pg)
        try:
            result = await other.fetch(
                "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND query LIKE '%FROM subscribers%'"
            )
        finally:
            await other.close()
        killed.extend(r["done"] for r in result)

    # A bounded receive buffer (autotuning would grow it to tcp_rmem's maximum).
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)]
    )
    try:
        async with (
            httpx.AsyncClient(base_url=server.url, transport=transport, timeout=20) as client,
            client.stream("GET", f"{BASE}/subscribers/export", headers=owner) as response,
        ):
            assert response.status_code == 200
            received = await read_until_cut(response, kill_the_export_connection)
        assert killed == [True]
        await asyncio.sleep(0.3)
        assert_cut_and_logged(server, received, total)
    finally:
        server.stop()
