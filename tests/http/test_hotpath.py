"""The hot routes (http/hotpath.py) answer, log and count exactly as the framework's stack
does: each request is sent through the served app's outermost callable and through the
FastAPI app alone (its middleware and fast lane), and the two are compared."""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from joserfc.jwk import ECKey
from prometheus_client.parser import text_string_to_metric_families

from outreach.core import logging as our_logging
from outreach.core.context import request_id_var
from outreach.core.logging import access_line, configure_logging, info_line
from tests.support import BASE, make_settings, start_api, unique_email

SUBMIT = f"{BASE}/inquiries/submit"
SUBSCRIBE = f"{BASE}/subscribers/subscribe"
UNSUBSCRIBE = f"{BASE}/subscribers/unsubscribe"
JSON = {"Content-Type": "application/json"}


def _requests() -> list[tuple[str, str, dict[str, Any]]]:
    """One of each answer a hot route gives (made anew per path: addresses are unique)."""
    submit = {"name": "Khách", "email": unique_email("hot"), "message": "Xin chào"}
    return [
        ("GET", "/healthz", {}),
        ("GET", f"{BASE}/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", f"{BASE}/readyz", {}),
        ("POST", SUBMIT, {"json": submit}),
        ("POST", SUBMIT, {"json": {**submit, "email": "not an address"}}),
        ("POST", SUBMIT, {"content": b"{not json", "headers": JSON}),
        ("POST", SUBMIT, {"content": b"name=x", "headers": {"Content-Type": "text/plain"}}),
        ("POST", SUBMIT, {"content": b"x" * (64 * 1024 + 1), "headers": JSON}),
        ("POST", SUBMIT + "?a=%00", {"json": submit}),
        ("POST", SUBSCRIBE, {"json": {"email": unique_email("hot"), "source": "footer"}}),
        ("POST", SUBSCRIBE, {"json": {"email": "nope"}}),
        ("POST", UNSUBSCRIBE, {"json": {"token": "unknown-token"}}),
        ("POST", UNSUBSCRIBE, {"content": b"", "headers": JSON}),
    ]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Our logging configured onto a buffer for the test, the previous setup restored."""
    saved = structlog.get_config()
    saved_fast = our_logging._fast
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("info", "logfmt", stream=stream)
    try:
        yield stream
    finally:
        structlog.configure(**saved)
        our_logging._fast = saved_fast
        root.handlers[:] = handlers
        root.setLevel(level)


def _same_answer(response: httpx.Response) -> tuple[Any, ...]:
    """What must not differ between the paths (ids, times and request ids do)."""
    headers = {k: v for k, v in response.headers.items() if k not in {"x-request-id"}}
    body: Any = response.content
    if response.headers.get("content-type", "").endswith("json") and body:
        data = response.json()
        if isinstance(data, dict):
            assert (
                data.get("requestId", response.headers["x-request-id"])
                == (response.headers["x-request-id"])
            )
            data.pop("requestId", None)
            if response.status_code == 201:
                data = {k: (v if k == "status" else type(v).__name__) for k, v in data.items()}
                headers.pop("content-length")
        body = data
    return response.status_code, headers, body


def _access_lines(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if "logger=outreach.access" in line]
    return [re.sub(r"(timestamp|requestId|durationMs)=\S+ ?", "", line) for line in lines]


def _requests_counted(text: str) -> Counter[tuple[str, str, str]]:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return Counter(
        {
            (s.labels["method"], s.labels["route"], s.labels["status"]): int(s.value)
            for s in families["http_requests"].samples
            if s.name == "http_requests_total"
        }
    )


async def test_hot_routes_answer_log_and_count_as_the_framework_does(
    pg_database: str, var_dir: Path, dev_key: ECKey, log_stream: io.StringIO
) -> None:
    settings = make_settings(pg_database, var_dir, metrics_enabled=True)
    async with start_api(settings, dev_key) as api:
        framework = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api.app, client=("203.0.113.7", 50000)),
            base_url="http://testserver",
        )
        answers: dict[str, list[tuple[Any, ...]]] = {}
        lines: dict[str, list[str]] = {}
        counted: dict[str, Counter[tuple[str, str, str]]] = {}
        async with framework:
            for name, client in (("hot", api.client), ("framework", framework)):
                before = _requests_counted((await client.get("/metrics")).text)
                start = log_stream.tell()
                answers[name] = []
                for method, url, kwargs in _requests():
                    answers[name].append(_same_answer(await client.request(method, url, **kwargs)))
                log_stream.seek(start)
                lines[name] = _access_lines(log_stream.read())
                after = _requests_counted((await client.get("/metrics")).text)
                counted[name] = after - before
    assert [a[0] for a in answers["hot"]] == [200] * 4 + [201, 422, 400, 415, 413, 422] + [
        202,
        422,
        404,
        422,
    ]
    assert answers["hot"] == answers["framework"]
    assert len(lines["hot"]) == len(_requests())
    assert lines["hot"] == lines["framework"]
    assert counted["hot"] == counted["framework"]
    assert counted["hot"][("GET", f"{BASE}/healthz", "200")] == 1
    assert counted["hot"][("POST", "unmatched", "413")] == 1  # refused before routing


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
@pytest.mark.parametrize("rid", ["-", "abc.DEF:1-2_3"])
@pytest.mark.parametrize("route", [SUBMIT, "unmatched", "/odd path=x"])
def test_the_fast_log_lines_are_the_line_structlog_writes(
    log_stream: io.StringIO, fmt: str, rid: str, route: str
) -> None:
    configure_logging("info", fmt, stream=log_stream)
    token = request_id_var.set(rid)
    try:
        fields = {"method": "POST", "route": route, "status": 201, "durationMs": 1.5}
        structlog.get_logger("outreach.access").info("request", **fields)
        info_line("outreach.access", "request", fields)
        access_line("POST", route, 201, 1.5)
    finally:
        request_id_var.reset(token)
    slow, *fast = log_stream.getvalue().splitlines()
    stamp = r'"?timestamp"?[=:]"?[0-9T:.Z-]+"?'
    assert [re.sub(stamp, "", line) for line in fast] == [re.sub(stamp, "", slow)] * 2
    assert ("requestId" in slow) == (rid != "-")


def test_no_access_line_below_its_level(log_stream: io.StringIO) -> None:
    configure_logging("warning", "logfmt", stream=log_stream)
    access_line("GET", "/healthz", 200, 0.1)
    info_line("outreach.access", "request", {"status": 200})
    assert log_stream.getvalue() == ""


def test_the_fast_log_line_defers_to_capture_logs(log_stream: io.StringIO) -> None:
    with structlog.testing.capture_logs() as logs:
        info_line("outreach.access", "request", {"method": "GET", "status": 200})
        access_line("GET", "/healthz", 200, 0.1)
    assert logs == [
        {"method": "GET", "status": 200, "event": "request", "log_level": "info"},
        {
            "method": "GET",
            "route": "/healthz",
            "status": 200,
            "durationMs": 0.1,
            "event": "request",
            "log_level": "info",
        },
    ]
    assert log_stream.getvalue() == ""
