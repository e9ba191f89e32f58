"""Socket.IO across two real replicas through a real Redis that the test owns (API.md 6, 6b).

Replica A takes the POSTs, the clients mostly sit on replica B: what they receive crossed
Redis. The last test stops Redis (hung, then killed) and restarts it on the same port.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

import httpx
import pytest

from outreach.auth.devkeys import mint_token
from tests.realtime.cluster import (
    Cluster,
    SioClient,
    metric,
    refused_message,
    sio_client,
    submit,
    wait_until,
)

pytestmark = pytest.mark.slow

DELIVERY_BOUND = 2.0  # seconds from the 201 on A to the event on B
FAST_SUBMIT = 1.5  # the submit answers within this, whatever Redis does
RECOVERY_BOUND = 5.0  # events flow again this long after Redis is back
FAILURES = "outreach_realtime_emit_failures_total"
CLIENTS = "outreach_realtime_connected_clients"


def marker() -> str:
    return uuid.uuid4().hex[:12]


async def test_event_from_replica_a_reaches_clients_on_both_replicas(cluster: Cluster) -> None:
    cashier = cluster.token("CASHIER", sub="cashier-1")
    owner = cluster.token("OWNER", sub="owner-1")
    async with (
        sio_client(cluster.b.url, token=cashier) as on_b,
        # The same verifier as HTTP: `Authorization: Bearer` works too.
        sio_client(cluster.a.url, headers={"Authorization": f"Bearer {owner}"}) as on_a,
        # A valid token whose role may not read inquiries: connected, told nothing.
        sio_client(cluster.b.url, token=cluster.token("MARKETING", sub="m-1")) as outsider,
        httpx.AsyncClient(timeout=10) as http,
    ):
        mark = marker()
        inquiry_id, _ = await submit(http, cluster.a.url, mark)
        sent_at = time.monotonic()
        payload = await on_b.wait_for("inquiry.sent", inquiry_id, DELIVERY_BOUND)
        assert (on_b.received_at("inquiry.sent", inquiry_id) or 0) - sent_at < DELIVERY_BOUND
        await on_a.wait_for("inquiry.sent", inquiry_id, DELIVERY_BOUND)

        # The payload is the inquiry (section 3), camelCase, ids as strings.
        assert payload["id"] == inquiry_id
        assert payload["status"] == "SENT"
        assert payload["name"] == f"Khách {mark}"
        assert payload["email"] == f"rt-{mark}@example.com"
        assert payload["message"] == f"Xin chào {mark}"
        assert payload["deletedAt"] is None
        assert payload["createdAt"].endswith("Z")
        assert {"clientIp", "userAgent", "updatedAt", "note", "phone", "source"} <= set(payload)

        # And the other way round: submitted on B, received on A.
        other_id, _ = await submit(http, cluster.b.url, marker())
        await on_a.wait_for("inquiry.sent", other_id, DELIVERY_BOUND)
        await on_b.wait_for("inquiry.sent", other_id, DELIVERY_BOUND)

        await asyncio.sleep(0.3)
        assert outsider.events == []
        # Each client got each event once (CASHIER + user rooms do not double it).
        assert [e[2]["id"] for e in on_b.events] == [inquiry_id, other_id]

        # The log line of section 6, on the replica that emitted.
        rooms = '[\\"role:CASHIER\\",\\"role:EMPLOYEE\\",\\"role:OWNER\\"]'
        expected = f'msg="Inquiry SENT | inquiryId: {inquiry_id} | rooms: {rooms}"'
        await wait_until(lambda: expected in cluster.a.output(), 5, what="the Inquiry SENT log")
        assert f"inquiryId={inquiry_id}" in cluster.a.output()

        # Each connection is logged with its rooms (JSON, like the Inquiry SENT line).
        joined = 'sub=cashier-1 rooms="[\\"role:CASHIER\\",\\"user:cashier-1\\"]"'
        assert joined in cluster.b.output()
        # The gauge counts the clients of each process.
        assert await metric(http, cluster.b.url, CLIENTS) == 2
        assert await metric(http, cluster.a.url, CLIENTS) == 1


async def test_updates_and_honeypot(cluster: Cluster) -> None:
    """inquiry.updated crosses replicas with `updatedBy`; a honeypot submit notifies nobody."""
    owner = cluster.token("OWNER", sub="owner-7")
    async with (
        sio_client(cluster.b.url, token=cluster.token("EMPLOYEE", sub="e-1")) as on_b,
        httpx.AsyncClient(timeout=10) as http,
    ):
        inquiry_id, _ = await submit(http, cluster.a.url, marker())
        await on_b.wait_for("inquiry.sent", inquiry_id, DELIVERY_BOUND)
        response = await http.patch(
            f"{cluster.a.url}/v1/api/outreach/inquiries/{inquiry_id}",
            json={"status": "IN_PROGRESS", "note": "gọi lại"},
            headers={"Authorization": f"Bearer {owner}"},
        )
        assert response.status_code == 200, response.text
        update = await on_b.wait_for("inquiry.updated", inquiry_id, DELIVERY_BOUND)
        assert update["status"] == "IN_PROGRESS"
        assert update["note"] == "gọi lại"
        assert update["updatedBy"] == "owner-7"
        assert set(update) == {
            "id", "status", "note", "assigneeId", "priority", "spamReason",
            "updatedAt", "deletedAt", "updatedBy",
        }  # fmt: skip

        body = {"name": "Spam", "email": "spam@example.com", "message": "x", "website": "http://x"}
        spam = await http.post(f"{cluster.a.url}/v1/api/outreach/inquiries/submit", json=body)
        assert spam.status_code == 201
        spam_id = spam.json()["id"]
        probe_id, _ = await submit(http, cluster.a.url, marker())  # sent after the spam
        await on_b.wait_for("inquiry.sent", probe_id, DELIVERY_BOUND)
        assert on_b.received("inquiry.sent", spam_id) is None


async def test_bad_tokens_are_refused_with_unauthorized(cluster: Cluster) -> None:
    from joserfc.jwk import ECKey

    other_key = ECKey.generate_key("P-256", auto_kid=True)
    cases: dict[str, dict[str, Any]] = {
        "no token": {},
        "garbage": {"token": "not-a-jwt"},
        "expired": {"token": cluster.token("OWNER", ttl=-120)},
        "foreign key": {"token": mint_token(other_key, sub="x", roles=["OWNER"])},
        "basic auth": {"headers": {"Authorization": "Basic b3duZXI6b3duZXI="}},
        "empty bearer": {"headers": {"Authorization": "Bearer "}},
    }
    async with httpx.AsyncClient(timeout=10) as http:
        before = await metric(http, cluster.b.url, CLIENTS)
        for name, connect in cases.items():
            message = await refused_message(cluster.b.url, **connect)
            assert message == {"message": "unauthorized"}, (name, message)
        assert await metric(http, cluster.b.url, CLIENTS) == before
    assert "Token refused" in cluster.b.output()


async def test_redis_hung_then_killed_then_back(cluster: Cluster) -> None:
    """Best effort: HTTP answers fast and counts the failure; events flow again by themselves."""
    token = cluster.token("CASHIER", sub="cashier-2")
    async with (
        sio_client(cluster.b.url, token=token) as on_b,
        sio_client(cluster.a.url, token=token) as on_a,
        httpx.AsyncClient(timeout=10) as http,
    ):
        warmup, _ = await submit(http, cluster.a.url, marker())
        await on_b.wait_for("inquiry.sent", warmup, DELIVERY_BOUND)

        for outage in ("hung", "killed"):
            failures_before = await metric(http, cluster.a.url, FAILURES)
            if outage == "hung":
                cluster.redis.pause()
            else:
                cluster.redis.stop()
            try:
                lost_id, took = await submit(http, cluster.a.url, marker())
                assert took < FAST_SUBMIT, f"{outage}: submit took {took:.2f} s"
                # Warning with the fields of section 6, counted, on the replica that emitted.
                await wait_until(
                    functools.partial(warning_line, cluster, lost_id),
                    5,
                    what=f"the warning ({outage})",
                )
                line = warning_line(cluster, lost_id)
                assert "level=warning" in line, line
                assert "event=inquiry.sent" in line, line
                assert await metric(http, cluster.a.url, FAILURES) >= failures_before + 1
                # The replica that took the request still told its own clients.
                await on_a.wait_for("inquiry.sent", lost_id, DELIVERY_BOUND)
                # Readiness reports it (whether it stays 200 is the probes' business).
                ready = await http.get(f"{cluster.a.url}/readyz")
                assert ready.json()["checks"]["redis"] == "down"
            finally:
                if outage == "hung":
                    cluster.redis.resume()
                else:
                    cluster.redis.start()  # the same port
            back = time.monotonic()
            recovered = await _first_delivery(cluster, http, on_b, RECOVERY_BOUND)
            assert recovered - back < RECOVERY_BOUND, f"{outage}: {recovered - back:.2f} s"
        assert "Realtime lost Redis; re-subscribing" in cluster.b.output()


def warning_line(cluster: Cluster, inquiry_id: str) -> str:
    for line in cluster.a.output().splitlines():
        if "Socket event service not ready" in line and f"inquiryId={inquiry_id}" in line:
            return line
    return ""


async def _first_delivery(
    cluster: Cluster, http: httpx.AsyncClient, client: SioClient, bound: float
) -> float:
    """Submit on A every 0.25 s until one reaches `client` on B; returns when it did."""
    deadline = time.monotonic() + bound + 1
    sent: list[str] = []
    while time.monotonic() < deadline:
        response = await http.post(
            f"{cluster.a.url}/v1/api/outreach/inquiries/submit",
            json={"name": "r", "email": "r@example.com", "message": marker()},
        )
        assert response.status_code == 201
        sent.append(response.json()["id"])
        await asyncio.sleep(0.25)
        times = [t for i in sent if (t := client.received_at("inquiry.sent", i)) is not None]
        if times:
            return min(times)
    raise AssertionError(f"no event reached replica B within {bound} s of Redis coming back")


async def test_a_burst_reaches_the_other_replica_whole_and_once(cluster: Cluster) -> None:
    """Events emitted together are published together (one Redis message, a `batch`):
    every one arrives on the other replica, once, with its own payload."""
    owner = cluster.token("OWNER", sub="owner-burst")
    async with (
        sio_client(cluster.b.url, token=owner) as on_b,
        httpx.AsyncClient(timeout=10) as http,
    ):
        marks = [marker() for _ in range(40)]
        submitted = await asyncio.gather(*(submit(http, cluster.a.url, m) for m in marks))
        ids = [inquiry_id for inquiry_id, _ in submitted]
        for inquiry_id in ids:
            await on_b.wait_for("inquiry.sent", inquiry_id, DELIVERY_BOUND * 3)
        await asyncio.sleep(0.3)
        received = [e[2]["id"] for e in on_b.events if e[1] == "inquiry.sent"]
        assert sorted(received) == sorted(ids)
        by_id = {e[2]["id"]: e[2] for e in on_b.events if e[1] == "inquiry.sent"}
        for (inquiry_id, _), mark in zip(submitted, marks, strict=True):
            assert by_id[inquiry_id]["message"] == f"Xin chào {mark}"


async def test_assignment_reaches_the_assignee_only_and_comments_every_reader(
    cluster: Cluster,
) -> None:
    """inquiry.assigned goes to `user:<assignee>` only, from replica A to a client on B;
    inquiry.commented to every reader, like inquiry.updated."""
    owner = {"Authorization": f"Bearer {cluster.token('OWNER', sub='lead-1')}"}
    async with (
        sio_client(cluster.b.url, token=cluster.token("EMPLOYEE", sub="agent-7")) as assignee,
        sio_client(cluster.b.url, token=cluster.token("EMPLOYEE", sub="agent-8")) as colleague,
        sio_client(cluster.a.url, token=cluster.token("CASHIER", sub="till-1")) as cashier,
        httpx.AsyncClient(timeout=10) as http,
    ):
        inquiry_id, _ = await submit(http, cluster.a.url, marker())
        await colleague.wait_for("inquiry.sent", inquiry_id, DELIVERY_BOUND)
        url = f"{cluster.a.url}/v1/api/outreach/inquiries/{inquiry_id}"
        patched = await http.patch(
            url, json={"assigneeId": "agent-7", "priority": "HIGH"}, headers=owner
        )
        assert patched.status_code == 200, patched.text
        assigned = await assignee.wait_for("inquiry.assigned", inquiry_id, DELIVERY_BOUND)
        assert assigned == patched.json()  # the inquiry, as GET answers it
        comment = await http.post(f"{url}/comments", json={"body": "Gọi khách"}, headers=owner)
        assert comment.status_code == 201, comment.text
        for client in (assignee, colleague, cashier):
            got = await client.wait_for("inquiry.commented", inquiry_id, DELIVERY_BOUND)
            assert got == comment.json()
            update = await client.wait_for("inquiry.updated", inquiry_id, DELIVERY_BOUND)
            assert (update["assigneeId"], update["priority"]) == ("agent-7", "HIGH")
        assert colleague.received("inquiry.assigned", inquiry_id) is None
        assert cashier.received("inquiry.assigned", inquiry_id) is None
