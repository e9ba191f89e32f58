"""Production's layout: `outreach serve` with JOBS_WORKER=false answers the requests and a
real `outreach worker` process (its own Snowflake worker id) does the webhook fan-out and
deliveries: a real receiver gets the submit's `inquiry.sent` and a public subscribe's
`subscriber.subscribed`, signed for `standardwebhooks`, and the web replica delivers
nothing itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from outreach.auth.devkeys import load_or_create_key, mint_token
from outreach.ids.snowflake import id_parts
from tests.receivers import Receiver
from tests.support import BASE, Server, unique_email
from tests.webhooks.helpers import drop_database, new_database
from tests.webhooks.test_replicas import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


async def test_outreach_worker_delivers_for_a_web_replica_without_one(
    tmp_path: Path, receiver: Receiver
) -> None:
    url = await new_database(tmp_path, "postgresql")
    env = {
        "DATABASE_URL": url,
        "VAR_DIR": str(tmp_path),
        "APP_ENV": "test",
        "WEBHOOK_ALLOW_PRIVATE": "true",
    }
    web = Server({**env, "APP_ENV_NODE_ID": "331", "JOBS_WORKER": "false"})
    worker_env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("APP_", "DATABASE_", "REDIS_", "JWKS_", "JWT_"))
        },
        **env,
        "APP_ENV_NODE_ID": "332",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "outreach.cli", "worker"],
        env=worker_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await asyncio.to_thread(web.wait_ready, 40)
        token = mint_token(load_or_create_key(tmp_path), sub="owner", roles=["OWNER"])
        path = f"/ok/worker-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(timeout=10) as client:
            created = await client.post(
                f"{web.url}{BASE}/webhooks",
                json={
                    "url": receiver.url + path,
                    "events": ["inquiry.sent", "subscriber.subscribed"],
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            assert created.status_code == 201, created.text
            submitted = await client.post(
                f"{web.url}{BASE}/inquiries/submit",
                json={"name": "Khách", "email": unique_email("w"), "message": "Xin chào"},
            )
            assert submitted.status_code == 201, submitted.text
            subscribed = await client.post(
                f"{web.url}{BASE}/subscribers/subscribe", json={"email": unique_email("ws")}
            )
            assert subscribed.status_code == 202
        got = await wait_for(receiver, path, 2, timeout=30)
        await asyncio.sleep(2)  # anything sent twice would have arrived by now
        got = await asyncio.to_thread(receiver.requests, path)
        secret = created.json()["secret"]
        bodies = {
            b["type"]: b for b in (Webhook(secret).verify(r["body"], r["headers"]) for r in got)
        }
        assert len(got) == 2
        assert bodies["inquiry.sent"]["data"]["id"] == submitted.json()["id"]
        assert bodies["subscriber.subscribed"]["data"]["status"] == "ACTIVE"
        # The messages were made by the worker, under its own worker id.
        for request in got:
            message_id = int(request["headers"]["webhook-id"].removeprefix("msg_"))
            assert id_parts(message_id).worker_id == 332
        assert "Webhook delivery" not in web.output()
    finally:
        with contextlib.suppress(Exception):
            web.stop(timeout=20)
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        await drop_database(url)
    assert worker.returncode == 0
    assert worker.stdout is not None
    out = worker.stdout.read().decode()
    assert "Job worker started" in out
    assert "workerId=332" in out
    assert "Webhook delivery" in out
