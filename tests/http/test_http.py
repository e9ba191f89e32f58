"""Request ids, problem+json for every failure, CORS, probes, docs, metrics."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from joserfc.jwk import ECKey
from prometheus_client.parser import text_string_to_metric_families

from tests.support import BASE, REDIS_URL, Api, make_settings, start_api


async def test_request_id_is_taken_when_valid_and_made_otherwise(pg_api: Api) -> None:
    given = await pg_api.client.get("/healthz", headers={"X-Request-Id": "abc.DEF:1-2_3"})
    assert given.headers["x-request-id"] == "abc.DEF:1-2_3"
    for bad in ("has space", "x" * 129, "semi;colon", ""):
        made = await pg_api.client.get("/healthz", headers={"X-Request-Id": bad})
        assert made.headers["x-request-id"] != bad
        assert len(made.headers["x-request-id"]) == 32
    problem = await pg_api.client.get(f"{BASE}/inquiries", headers={"X-Request-Id": "trace-1"})
    assert problem.json()["requestId"] == "trace-1"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("DELETE", "/healthz", 405),
        ("PUT", f"{BASE}/inquiries/submit", 405),
    ],
)
async def test_framework_errors_are_problem_json(
    pg_api: Api, method: str, path: str, status: int
) -> None:
    response = await pg_api.client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "requestId"}
    assert body["status"] == status


async def test_no_stack_trace_or_sql_in_errors(pg_api: Api) -> None:
    response = await pg_api.client.post(
        f"{BASE}/inquiries/submit",
        content=b'{"name": "a", "email": "a@b.co", "message": "m", "phone": {"$gt": 1}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    text = response.text
    for leak in ("Traceback", "SELECT", "INSERT", "asyncpg"):
        assert leak not in text


async def test_probes_at_root_and_under_base(pg_api: Api) -> None:
    for prefix in ("", BASE):
        health = await pg_api.client.get(f"{prefix}/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = await pg_api.client.get(f"{prefix}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "checks": {"database": "ok", "migrations": "ok", "redis": "disabled"},
        }


async def test_readyz_reports_redis(pg_database: str, var_dir: Path, dev_key: ECKey) -> None:
    settings = make_settings(pg_database, var_dir, redis_url=REDIS_URL)
    async with start_api(settings, dev_key) as api:
        ready = await api.client.get("/readyz")
        assert ready.json()["checks"]["redis"] == "ok"
    down = make_settings(pg_database, var_dir, redis_url="redis://127.0.0.1:1/0")
    async with start_api(down, dev_key) as api:
        ready = await api.client.get("/readyz")
        # Redis only degrades realtime: still ready.
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"] == "down"


async def test_readyz_fails_on_pending_migrations(tmp_path: Path, dev_key: ECKey) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path)
    async with start_api(settings, dev_key) as api:
        ready = await api.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["retry-after"]
        assert ready.json() == {
            "status": "fail",
            "checks": {"database": "ok", "migrations": "pending", "redis": "disabled"},
        }


async def test_readyz_fails_without_database(tmp_path: Path, dev_key: ECKey) -> None:
    settings = make_settings("postgresql://postgres@127.0.0.1:1/nothing", tmp_path)
    async with start_api(settings, dev_key) as api:
        ready = await api.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "fail"
        assert (await api.client.get("/healthz")).status_code == 200
        submit = await api.client.post(
            f"{BASE}/inquiries/submit", json={"name": "a", "email": "a@b.co", "message": "m"}
        )
        assert submit.status_code == 503
        assert submit.json()["type"].endswith("/database-unavailable")
        assert submit.headers["retry-after"]


async def test_openapi_document_lists_every_route_with_errors(pg_api: Api) -> None:
    response = await pg_api.client.get(f"{BASE}/doc/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    submit = doc["paths"][f"{BASE}/inquiries/submit"]["post"]
    assert set(submit["responses"]) >= {"201", "400", "413", "415", "422"}
    assert "Problem" in doc["components"]["schemas"]
    patch = doc["paths"][f"{BASE}/inquiries/{{id}}"]["patch"]
    assert "409" in patch["responses"]
    assert "requestBody" in doc["paths"][f"{BASE}/subscribers/unsubscribe"]["post"]


async def test_doc_page_uses_the_bundle_served_here(pg_api: Api) -> None:
    page = await pg_api.client.get(f"{BASE}/doc")
    assert page.status_code == 200
    html = page.text
    assert "cdn" not in html.lower()
    assert "https://" not in html
    assert f"{BASE}/doc/scalar.standalone.js?v=" in html
    assert f"{BASE}/doc/openapi.json" in html
    bundle = await pg_api.client.get(
        f"{BASE}/doc/scalar.standalone.js", headers={"Accept-Encoding": "gzip"}
    )
    assert bundle.status_code == 200
    assert "max-age=31536000" in bundle.headers["cache-control"]
    assert bundle.headers["content-encoding"] == "gzip"
    assert len(bundle.content) > 1_000_000  # httpx decoded it
    assert gzip.compress(b"x")  # the module is the one used to encode


async def test_metrics_404_unless_enabled(pg_api: Api) -> None:
    assert (await pg_api.client.get("/metrics")).status_code == 404


async def test_metrics_use_route_templates(pg_database: str, var_dir: Path, dev_key: ECKey) -> None:
    settings = make_settings(pg_database, var_dir, metrics_enabled=True)
    async with start_api(settings, dev_key) as api:
        await api.client.get(f"{BASE}/inquiries/1234567", headers=api.owner)
        await api.client.get("/some/random/path")
        response = await api.client.get("/metrics")
        assert response.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        routes = {s.labels.get("route") for s in families["http_requests"].samples}
        assert f"{BASE}/inquiries/{{id}}" in routes
        assert "unmatched" in routes
        assert not any(r and "1234567" in r for r in routes)
        for name in (
            "http_request_duration_seconds",
            "outreach_inquiries_submitted",
            "outreach_subscriber_events",
            "outreach_realtime_emit_failures",
            "outreach_realtime_connected_clients",
            "process_resident_memory_bytes",
        ):
            assert name in families, name
        assert (await api.client.get(f"{BASE}/metrics")).status_code == 404


async def test_cors_preflight_for_the_website(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    settings = make_settings(
        pg_database, var_dir, cors_allow_origins="https://shop.example,https://www.shop.example"
    )
    async with start_api(settings, dev_key) as api:
        preflight = await api.client.options(
            f"{BASE}/inquiries/submit",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        other = await api.client.options(
            f"{BASE}/inquiries/submit",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted"),
    [
        ("fe80::1%wlx" + "0" * 60, None, []),
        ("10.0.0.2", "fe80::1%wlx" + "0" * 60, ["10.0.0.0/8"]),
    ],
    ids=["peer", "forwarded"],
)
def test_a_zoned_ipv6_address_is_stored_without_its_zone(
    peer: str, forwarded: str | None, trusted: list[str]
) -> None:
    """A link-local address ("fe80::1%<interface>") could overflow the 45-character column."""
    from starlette.requests import Request

    from outreach.http.client import client_ip

    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "headers": headers, "client": (peer, 5000)}
    assert client_ip(Request(scope), trusted) == "fe80::1"


async def test_client_ip_from_trusted_proxy_only(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    settings = make_settings(pg_database, var_dir, trusted_proxies="203.0.113.0/24")
    async with start_api(settings, dev_key) as api:
        response = await api.client.post(
            f"{BASE}/inquiries/submit",
            json={"name": "a", "email": "a@b.co", "message": "m"},
            headers={"X-Forwarded-For": "1.2.3.4, 198.51.100.9, 203.0.113.50"},
        )
        got = await api.client.get(f"{BASE}/inquiries/{response.json()['id']}", headers=api.owner)
        assert got.json()["clientIp"] == "198.51.100.9"
    async with start_api(make_settings(pg_database, var_dir), dev_key) as api:
        response = await api.client.post(
            f"{BASE}/inquiries/submit",
            json={"name": "a", "email": "a@b.co", "message": "m"},
            headers={"X-Forwarded-For": "198.51.100.9"},
        )
        got = await api.client.get(f"{BASE}/inquiries/{response.json()['id']}", headers=api.owner)
        assert got.json()["clientIp"] == "203.0.113.7"  # the peer: no trusted proxy configured


async def test_forwarded_for_is_read_across_header_lines(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    """Two X-Forwarded-For lines are one list: the last line holds the hops nearest to us."""
    settings = make_settings(pg_database, var_dir, trusted_proxies="203.0.113.0/24")
    async with start_api(settings, dev_key) as api:
        response = await api.client.post(
            f"{BASE}/inquiries/submit",
            json={"name": "a", "email": "a@b.co", "message": "m"},
            headers=[
                ("X-Forwarded-For", "1.2.3.4, 198.51.100.9"),
                ("X-Forwarded-For", "198.51.100.20, 203.0.113.50"),
            ],
        )
        got = await api.client.get(f"{BASE}/inquiries/{response.json()['id']}", headers=api.owner)
        assert got.json()["clientIp"] == "198.51.100.20"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (f"{BASE}/inquiries/123", "DELETE, GET, PATCH"),
        (f"{BASE}/subscribers", "GET, POST"),
        ("/healthz", "GET"),
        (f"{BASE}/inquiries/submit", "POST"),
        (f"{BASE}/subscribers/export", "GET"),
    ],
)
async def test_405_lists_every_method_of_the_path(pg_api: Api, path: str, allowed: str) -> None:
    response = await pg_api.client.put(path, headers=pg_api.owner)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
