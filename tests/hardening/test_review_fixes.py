"""Findings of the security and reliability review (issue 11), each shown as a user sees it.

- Out-of-range time filters and NUL characters in query parameters are 422, never 500.
- An unexpected 500 carries the request id, in the answer and in its log line.
- No log line carries a token or personal data, at LOG_LEVEL=debug too (a real process).
- A clock stepped back answers writes 503 with Retry-After and fails readiness until the
  clock catches up.
- No redirects on the public routes (a trailing slash is not a 307).
- A long statistics range on SQLite does not block the event loop.
- /metrics shows both database pools.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc.jwk import ECKey
from prometheus_client.parser import text_string_to_metric_families

from outreach.auth.devkeys import load_or_create_key, mint_token
from outreach.config import Settings
from outreach.core.logging import configure_logging
from outreach.ids.snowflake import SnowflakeGenerator
from outreach.inquiries.service import inquiry as inquiry_service
from outreach.main import create_app
from outreach.models import migrate
from tests.support import BASE, Api, Server, make_settings, start_api, unique_email

# --------------------------------------------------------------------------- 422, not 500


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("createdFrom", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
        ("createdTo", "9999-12-31T23:59:59-05:00"),  # after year 9999 in UTC
    ],
)
@pytest.mark.parametrize("resource", ["inquiries", "subscribers"])
async def test_out_of_range_time_filters_are_422(
    api: Api, resource: str, name: str, value: str
) -> None:
    answer = await api.client.get(f"{BASE}/{resource}", params={name: value}, headers=api.owner)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == name


async def test_the_extreme_time_filters_that_exist_still_work(api: Api) -> None:
    answer = await api.client.get(
        f"{BASE}/inquiries",
        params={"createdFrom": "0001-01-01T00:00:00Z", "createdTo": "9999-12-31T23:59:59Z"},
        headers=api.owner,
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/inquiries?q=a%00b", "q"),
        ("GET", "/inquiries?email=a%00@example.com", "email"),
        ("GET", "/inquiries?cursor=%00", "cursor"),
        ("GET", "/subscribers?q=%00", "q"),
        ("GET", "/subscribers/export?q=x%00", "q"),
        ("POST", "/subscribers/unsubscribe?token=abc%00def", "token"),
    ],
)
async def test_nul_in_a_query_parameter_is_422(api: Api, method: str, path: str, name: str) -> None:
    answer = await api.client.request(method, BASE + path, headers=api.owner)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["errors"] == [{"field": name, "message": "must not contain NUL"}]
    assert body["requestId"] == answer.headers["x-request-id"]


async def test_an_unexpected_error_answers_500_with_its_request_id(
    pg_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(inquiry_service, "get", broken)
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)  # the real processors: request id added
    try:
        answer = await pg_api.client.get(
            f"{BASE}/inquiries/1", headers={**pg_api.owner, "X-Request-Id": "bug-trace-1"}
        )
    finally:
        configure_logging("warning", "logfmt")
    logs = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["x-request-id"] == "bug-trace-1"
    assert answer.json()["requestId"] == "bug-trace-1"
    assert "ZeroDivisionError" not in answer.text
    assert "a bug" not in answer.text
    logged = [line for line in logs if line.get("msg") == "Unhandled error"]
    assert logged
    assert logged[0]["requestId"] == "bug-trace-1"
    assert logged[0]["error"] == "ZeroDivisionError"


# --------------------------------------------------------------------------- logs at debug


@pytest.fixture(params=["postgresql", "sqlite"])
def debug_server(
    request: pytest.FixtureRequest, pg_database: str, tmp_path: Path
) -> Iterator[tuple[Server, str]]:
    var_dir = tmp_path / "var"
    key = load_or_create_key(var_dir)
    if request.param == "postgresql":
        url = pg_database
    else:
        url = f"sqlite:///{(tmp_path / 'debug.db').as_posix()}"
        asyncio.run(migrate(Settings(database_url=url, app_env="test", var_dir=var_dir)))
    env = {"DATABASE_URL": url, "VAR_DIR": str(var_dir), "APP_ENV": "test", "LOG_LEVEL": "debug"}
    server = Server(env)
    try:
        server.wait_ready(timeout=40)
        yield server, mint_token(key, sub="debug-owner", roles=["OWNER"])
    finally:
        server.stop(timeout=20)


def test_no_log_line_carries_tokens_or_personal_data_at_debug(
    debug_server: tuple[Server, str],
) -> None:
    server, token = debug_server
    marker = uuid.uuid4().hex[:10]
    email = f"secret-{marker}@example.com"
    personal = [email, f"Name{marker}", f"Message{marker}", f"+84 {marker[:6]}".replace("a", "1")]
    with httpx.Client(base_url=server.url + BASE, timeout=20) as http:
        owner = {"Authorization": f"Bearer {token}"}
        submitted = http.post(
            "/inquiries/submit",
            json={"name": personal[1], "email": email, "message": personal[2]},
        )
        assert submitted.status_code == 201
        found = http.get("/inquiries", params={"q": marker}, headers=owner).json()
        assert found["meta"]["total"] == 1
        assert http.post("/subscribers/subscribe", json={"email": email}).status_code == 202
        export = http.get("/subscribers/export", params={"q": marker}, headers=owner)
        rows = list(csv.DictReader(io.StringIO(export.text)))
        link = rows[0]["unsubscribeUrl"]
        unsubscribe_token = link.rsplit("token=", 1)[1]
        assert http.post("/subscribers/unsubscribe", json={"token": unsubscribe_token}).json() == {
            "status": "UNSUBSCRIBED"
        }
    time.sleep(0.5)  # the last lines reach the file
    output = server.output()
    assert "level=debug" in output or "debug" in output  # the level took effect
    for secret in [unsubscribe_token, token, *personal[:3], marker]:
        assert secret not in output, f"{secret!r} is in the log"


# --------------------------------------------------------------------------- the clock


class SteppableClock:
    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


async def test_a_clock_stepped_back_answers_503_and_fails_readiness(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    clock = SteppableClock()
    app = create_app(make_settings(pg_database, var_dir), ids=SnowflakeGenerator(977, clock=clock))
    owner = {"Authorization": "Bearer " + mint_token(dev_key, sub="clock", roles=["OWNER"])}
    body = {"name": "Clock", "email": "clock@example.com", "message": "m"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post(f"{BASE}/inquiries/submit", json=body)).status_code == 201
            clock.offset_ms = -90_000  # NTP stepped the clock back 90 s

            for answer in (
                await client.post(f"{BASE}/inquiries/submit", json=body),
                await client.post(f"{BASE}/subscribers/subscribe", json={"email": unique_email()}),
                await client.post(
                    f"{BASE}/subscribers", json={"email": unique_email()}, headers=owner
                ),
            ):
                assert answer.status_code == 503, answer.text
                assert answer.json()["type"].endswith("/clock-behind")
                assert 1 <= int(answer.headers["retry-after"]) <= 60
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "fail"
            assert (await client.get("/healthz")).status_code == 200  # alive, not ready

            clock.offset_ms = 0  # caught up
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.post(f"{BASE}/inquiries/submit", json=body)).status_code == 201


# --------------------------------------------------------------------------- no redirects


@pytest.mark.parametrize(
    "path",
    ["/subscribers/unsubscribe/", "/subscribers/subscribe/", "/inquiries/submit/", "/inquiries/"],
)
async def test_no_redirect_for_a_trailing_slash(pg_api: Api, path: str) -> None:
    answer = await pg_api.client.post(
        BASE + path,
        content=b"List-Unsubscribe=One-Click",
        headers={**pg_api.owner, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 404, (answer.status_code, answer.headers.get("location"))
    assert answer.headers["content-type"] == "application/problem+json"


# --------------------------------------------------------------------------- SQLite statistics


async def test_a_long_statistics_range_on_sqlite_leaves_the_event_loop_free(
    sqlite_api: Api,
) -> None:
    # 366 months in a zone with summer time: the offsets over 30 years are worked out in
    # Python. Measure how long that takes here, then check that the loop keeps ticking.
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from outreach.statistics.service import offset_segments

    started = time.perf_counter()
    getattr(offset_segments, "__wrapped__", offset_segments)(
        ZoneInfo("Europe/Paris"), datetime(1990, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC)
    )
    work = time.perf_counter() - started

    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)  # the ticker runs before the request starts
    answer = await sqlite_api.client.get(
        f"{BASE}/statistics/inquiries",
        params={
            "from": "1995-01-01",
            "to": "2025-06-30",
            "interval": "month",
            "tz": "Europe/Paris",
        },
        headers=sqlite_api.owner,
    )
    stop.set()
    await ticking
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["series"]) == 366
    assert max(gaps) < max(0.1, work / 3), (max(gaps), work)


# --------------------------------------------------------------------------- pool metrics


async def test_metrics_show_both_database_pools(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    settings = make_settings(pg_database, var_dir, metrics_enabled=True)
    async with start_api(settings, dev_key) as api:
        await api.client.post(
            f"{BASE}/inquiries/submit", json={"name": "M", "email": "m@example.com", "message": "m"}
        )
        await api.client.get(f"{BASE}/inquiries/1", headers=api.owner)
        text = (await api.client.get("/metrics")).text
    samples = {
        (s.name, s.labels.get("pool")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("outreach_db_pool")
    }
    for pool in ("asyncpg", "sqlalchemy"):
        assert samples[("outreach_db_pool_size", pool)] >= 1
        assert ("outreach_db_pool_checked_out", pool) in samples
    assert samples[("outreach_db_pool_waiters", "asyncpg")] == 0
