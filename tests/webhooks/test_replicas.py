"""The queue delivers: two real `outreach serve` replicas on one PostgreSQL database work the
jobs, and a real receiver process gets each message once, first tried within 10 s of the
commit, signed for `standardwebhooks`; a receiver that fails once gets the same message again
about 5 s later, and the deliveries log shows both attempts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from outreach.auth.devkeys import load_or_create_key, mint_token
from tests.receivers import Receiver
from tests.support import BASE, Server, unique_email
from tests.webhooks.helpers import drop_database, new_database

pytestmark = pytest.mark.slow


@dataclass
class Replicas:
    a: Server
    b: Server
    owner: dict[str, str]


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Replicas]:
    url = await new_database(tmp_path, "postgresql")
    env = {
        "DATABASE_URL": url,
        "VAR_DIR": str(tmp_path),
        "APP_ENV": "test",
        "WEBHOOK_ALLOW_PRIVATE": "true",
    }
    servers = [Server({**env, "APP_ENV_NODE_ID": node}) for node in ("311", "312")]
    try:
        for server in servers:
            await asyncio.to_thread(server.wait_ready, 40)
        token = mint_token(load_or_create_key(tmp_path), sub="replica-owner", roles=["OWNER"])
        yield Replicas(servers[0], servers[1], {"Authorization": f"Bearer {token}"})
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop(timeout=20)
        await drop_database(url)


async def wait_for(receiver: Receiver, prefix: str, count: int, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(receiver.requests, prefix)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


async def test_two_replicas_deliver_each_message_once(
    replicas: Replicas, receiver: Receiver
) -> None:
    path = f"/ok/replicas-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(
            f"{replicas.a.url}{BASE}/webhooks",
            json={"url": receiver.url + path, "events": ["inquiry.sent", "inquiry.updated"]},
            headers=replicas.owner,
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]

        async def submit(n: int) -> tuple[str, float]:
            server = replicas.a if n % 2 else replicas.b
            answer = await client.post(
                f"{server.url}{BASE}/inquiries/submit",
                json={"name": f"Khách {n}", "email": unique_email("rep"), "message": "Xin chào"},
            )
            assert answer.status_code == 201, answer.text
            return answer.json()["id"], time.time()

        submitted = dict(await asyncio.gather(*(submit(n) for n in range(40))))
        first = next(iter(submitted))
        patched = await client.patch(
            f"{replicas.b.url}{BASE}/inquiries/{first}",
            json={"status": "IN_PROGRESS"},
            headers=replicas.owner,
        )
        assert patched.status_code == 200, patched.text
        updated_at = time.time()

    got = await wait_for(receiver, path, 41, timeout=30)
    await asyncio.sleep(3)  # anything sent twice would have arrived by now
    got = await asyncio.to_thread(receiver.requests, path)
    assert len(got) == 41
    ids = [r["headers"]["webhook-id"] for r in got]
    assert len(set(ids)) == 41  # each message once
    bodies = [Webhook(secret).verify(r["body"], r["headers"]) for r in got]
    sent = {
        b["data"]["id"]: r for b, r in zip(bodies, got, strict=True) if b["type"] == "inquiry.sent"
    }
    assert set(sent) == set(submitted)
    (update,) = [b for b in bodies if b["type"] == "inquiry.updated"]
    assert update["data"]["id"] == first
    assert update["data"]["updatedBy"] == "replica-owner"
    # First tried within 10 s of the commit (the answer came after it).
    for inquiry_id, answered in submitted.items():
        assert int(sent[inquiry_id]["headers"]["webhook-timestamp"]) - answered < 10
    assert max(int(r["headers"]["webhook-timestamp"]) for r in got) - updated_at < 10


async def test_a_failing_receiver_gets_the_same_message_again(
    replicas: Replicas, receiver: Receiver
) -> None:
    path = f"/fail/1/queue-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(
            f"{replicas.a.url}{BASE}/webhooks",
            json={"url": receiver.url + path, "events": ["inquiry.sent"]},
            headers=replicas.owner,
        )
        endpoint = created.json()
        answer = await client.post(
            f"{replicas.b.url}{BASE}/inquiries/submit",
            json={"name": "Khách", "email": unique_email("retry"), "message": "Xin chào"},
        )
        assert answer.status_code == 201
        got = await wait_for(receiver, path, 2, timeout=30)
        log = await client.get(
            f"{replicas.a.url}{BASE}/webhooks/{endpoint['id']}/deliveries",
            headers=replicas.owner,
        )
    assert len(got) == 2
    first, second = got
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    for request in got:
        assert Webhook(endpoint["secret"]).verify(request["body"], request["headers"])
    waited = int(second["headers"]["webhook-timestamp"]) - int(
        first["headers"]["webhook-timestamp"]
    )
    assert 4 <= waited <= 15  # the schedule's first wait: about 5 s
    attempts = [(d["attempt"], d["status"], d["responseStatus"]) for d in log.json()["data"]]
    assert attempts == [(2, "succeeded", 204), (1, "failed", 500)]
