"""Log lines: one event a line, logfmt or JSON, request id on every line, secrets redacted."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from outreach.core.context import request_id_var
from outreach.core.logging import configure_logging


@pytest.fixture
def stdout() -> Iterator[io.StringIO]:
    yield io.StringIO()
    configure_logging("warning", "logfmt")


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_one_line_per_event_with_request_id(stdout: io.StringIO, fmt: str) -> None:
    configure_logging("info", fmt, stdout)
    token = request_id_var.set("req-42")
    try:
        structlog.get_logger("t").info(
            "Inquiry SENT | x", inquiryId="1", token="secret-value", _event="inquiry.sent"
        )
        logging.getLogger("uvicorn.error").warning("from the standard library")
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            structlog.get_logger("t").exception("failed")
    finally:
        request_id_var.reset(token)
    lines = stdout.getvalue().strip().splitlines()
    assert len(lines) == 3
    assert "secret-value" not in stdout.getvalue()
    if fmt == "json":
        events = [orjson.loads(line) for line in lines]
        assert [e["requestId"] for e in events] == ["req-42"] * 3
        assert events[0]["msg"] == "Inquiry SENT | x"
        assert events[0]["inquiryId"] == "1"
        assert events[0]["event"] == "inquiry.sent"
        assert events[1]["level"] == "warning"
    else:
        assert all(line.startswith("timestamp=") for line in lines)
        assert all("requestId=req-42" in line for line in lines)
        assert 'msg="Inquiry SENT | x"' in lines[0]
        assert "inquiryId=1" in lines[0]
        assert "event=inquiry.sent" in lines[0]
        assert "level=warning" in lines[1]
