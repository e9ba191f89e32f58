"""A blocklist change on one replica reaches the other within seconds (Redis announces it),
with two real `outreach serve` processes on one PostgreSQL and the machine's Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from outreach.auth.devkeys import load_or_create_key, mint_token
from tests.support import BASE, REDIS_URL, Server

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(pg_database: str, tmp_path: Path) -> Iterator[tuple[Server, Server, str]]:
    var_dir = tmp_path / "var"
    key = load_or_create_key(var_dir)
    env = {
        "DATABASE_URL": pg_database,
        "REDIS_URL": REDIS_URL,
        "VAR_DIR": str(var_dir),
        "APP_ENV": "test",
    }
    servers = [Server({**env, "APP_ENV_NODE_ID": node}) for node in ("311", "312")]
    try:
        for server in servers:
            server.wait_ready(timeout=40)
        yield servers[0], servers[1], mint_token(key, sub="bl-owner", roles=["OWNER"])
    finally:
        for server in servers:
            server.stop(timeout=20)


def spam_reason(http: httpx.Client, email: str, owner: dict[str, str]) -> str | None:
    made = http.post(f"{BASE}/inquiries/submit", json={"name": "R", "email": email, "message": "m"})
    assert made.status_code == 201, made.text
    got = http.get(f"{BASE}/inquiries/{made.json()['id']}", headers=owner).json()
    reason: str | None = got["spamReason"]
    return reason


def until(predicate: object, timeout: float) -> float:
    """Seconds until `predicate()` is true (it is polled every 50 ms); fails after timeout."""
    assert callable(predicate)
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "not within the time"
        time.sleep(0.05)
    return time.monotonic() - started


def test_an_entry_added_and_deleted_on_a_reaches_b_within_seconds(
    replicas: tuple[Server, Server, str],
) -> None:
    a, b, token = replicas
    owner = {"Authorization": f"Bearer {token}"}
    domain = f"r{uuid.uuid4().hex[:10]}.example"
    email = f"bot@{domain}"
    with (
        httpx.Client(base_url=a.url, timeout=10) as on_a,
        httpx.Client(base_url=b.url, timeout=10) as on_b,
    ):
        assert spam_reason(on_b, email, owner) is None
        made = on_a.post(
            f"{BASE}/blocklist", json={"kind": "domain", "value": domain}, headers=owner
        )
        assert made.status_code == 201
        assert spam_reason(on_a, email, owner) == "blocklist"  # on A at once
        added = until(lambda: spam_reason(on_b, email, owner) == "blocklist", 5)

        assert (
            on_a.delete(f"{BASE}/blocklist/{made.json()['id']}", headers=owner).status_code == 204
        )
        assert spam_reason(on_a, email, owner) is None
        removed = until(lambda: spam_reason(on_b, email, owner) is None, 5)
    # Well under the periodic fallback (15 s): the Redis message did it.
    assert added < 3
    assert removed < 3
