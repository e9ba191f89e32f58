"""Schemathesis against the service's own OpenAPI document, on a real server and PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from outreach.auth.devkeys import load_or_create_key, mint_token
from tests.support import BASE, Server

# Checks that judge the service by its document. Left out, with reasons:
# - positive_data_acceptance: cross-field and stateful rules the schema cannot say (from
#   after to, an Idempotency-Key reused with another body, a cursor we did not issue, an
#   unsubscribe token in neither body nor query) are refused with 422 by design;
# - negative_data_rejection: values "invalid" to the schema but accepted on purpose after
#   trimming (API.md section 3: validation is after trimming).
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",
        "unsupported_method",
    ]
)


def schemathesis(server: Server, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{server.url}{BASE}/doc/openapi.json",
            "--url",
            server.url,
            "--checks",
            CHECKS,
            "--max-examples",
            os.environ.get("SCHEMATHESIS_EXAMPLES", "25"),
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "2",
            "--seed",
            "20261124",
            # Webhook URLs would make the server look up and call random hosts: their routes
            # are tested against local receivers only (tests/webhooks), never fuzzed.
            "--exclude-tag",
            "webhooks",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=server.log_path.parent,
    )


@pytest.mark.slow
def test_every_operation_holds_to_its_document(pg_database: str, tmp_path: Path) -> None:
    server = Server({"DATABASE_URL": pg_database, "VAR_DIR": str(tmp_path), "LOG_LEVEL": "warning"})
    try:
        server.wait_ready()
        owner = mint_token(load_or_create_key(tmp_path), sub="fuzz-owner", roles=["OWNER"])
        document = httpx.get(f"{server.url}{BASE}/doc/openapi.json").json()
        operations = sum(
            1
            for path in document["paths"].values()
            for method, operation in path.items()
            if method != "parameters" and "webhooks" not in operation.get("tags", [])
        )
        with_token = schemathesis(server, "-H", f"Authorization: Bearer {owner}")
        anonymous = schemathesis(server)
    finally:
        server.stop()
    for run in (with_token, anonymous):
        assert run.returncode == 0, run.stdout[-6000:]
        # Every documented operation but the webhooks' (never fuzzed: they call URLs).
        assert f"Tested: {operations}" in run.stdout
        assert operations >= 26  # API.md sections 1-12, and 10 more of section 13 untested
        cases = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
        assert cases is not None, run.stdout[-2000:]
        assert int(cases.group(1)) >= 300
        assert cases.group(1) == cases.group(2)
    assert "Unhandled error" not in server.output()
