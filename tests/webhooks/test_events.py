"""Events become webhook messages in the transaction of their change (admin routes): the
payload is the realtime event's, only subscribed active endpoints get one, and a change
that rolls back queues nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import select, text

from outreach.jobs import Job
from outreach.webhooks.models import WebhookMessage
from tests.support import BASE, Api, Dns, Recorder, unique_email
from tests.webhooks.helpers import PUBLIC_ADDRESS, PUBLIC_HOST, WEBHOOKS, create


@pytest.fixture(autouse=True)
def _public_name(dns: Dns) -> Dns:
    dns.names[PUBLIC_HOST] = [PUBLIC_ADDRESS]
    return dns


@pytest.fixture
def emitted(api: Api, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(api.state.realtime, "emit", recorder.emit)
    return recorder


async def messages(api: Api, endpoint_id: str) -> list[dict[str, Any]]:
    """The bodies queued for one endpoint, oldest first."""
    async with api.state.sessionmaker() as session:
        rows = (
            await session.scalars(
                select(WebhookMessage)
                .where(WebhookMessage.endpoint_id == int(endpoint_id))
                .order_by(WebhookMessage.id)
            )
        ).all()
    return [orjson.loads(row.body or "null") for row in rows]


async def submit(api: Api) -> str:
    response = await api.client.post(
        f"{BASE}/inquiries/submit",
        json={"name": "Khách", "email": unique_email("hook"), "message": "Xin chào"},
    )
    assert response.status_code == 201, response.text
    inquiry_id: str = response.json()["id"]
    return inquiry_id


async def test_an_admin_change_queues_its_event(api: Api, emitted: Recorder) -> None:
    updates = await create(api, events=["inquiry.updated"])
    other = await create(api, events=["subscriber.subscribed"])
    paused = await create(api, events=["inquiry.updated"])
    await api.client.patch(f"{WEBHOOKS}/{paused['id']}", json={"active": False}, headers=api.owner)
    inquiry_id = await submit(api)
    patched = await api.client.patch(
        f"{BASE}/inquiries/{inquiry_id}",
        json={"status": "IN_PROGRESS", "note": "gọi lại"},
        headers=api.owner,
    )
    assert patched.status_code == 200, patched.text
    await api.drain_events()
    (realtime,) = [p for p in emitted.of("inquiry.updated") if p["id"] == inquiry_id]
    (queued,) = await messages(api, updates["id"])
    assert queued["type"] == "inquiry.updated"
    assert queued["data"] == realtime  # the realtime event's payload, as it was then
    assert queued["data"]["updatedBy"] == "owner-1"
    assert await messages(api, other["id"]) == []
    assert await messages(api, paused["id"]) == []


async def test_a_change_that_rolls_back_queues_nothing(api: Api) -> None:
    updates = await create(api, events=["inquiry.updated"])
    inquiry_id = await submit(api)
    url = f"{BASE}/inquiries/{inquiry_id}"
    assert (
        await api.client.patch(url, json={"status": "RESOLVED"}, headers=api.owner)
    ).status_code == 200
    refused = await api.client.patch(url, json={"status": "CANCELLED"}, headers=api.owner)
    assert refused.status_code == 409
    assert [m["data"]["status"] for m in await messages(api, updates["id"])] == ["RESOLVED"]


async def test_bulk_changes_queue_one_message_each(api: Api) -> None:
    updates = await create(api, events=["inquiry.updated"])
    ids = [await submit(api) for _ in range(3)]
    answer = await api.client.post(
        f"{BASE}/inquiries/bulk-status",
        json={"ids": ids, "status": "CANCELLED"},
        headers=api.owner,
    )
    assert answer.json()["updated"] == ids
    queued = await messages(api, updates["id"])
    assert sorted(m["data"]["id"] for m in queued) == sorted(ids)
    assert {m["data"]["status"] for m in queued} == {"CANCELLED"}
    assert (
        await api.client.delete(f"{BASE}/inquiries/{ids[0]}", headers=api.owner)
    ).status_code == 204
    deleted = (await messages(api, updates["id"]))[-1]
    assert deleted["data"]["id"] == ids[0]
    assert deleted["data"]["deletedAt"] is not None


async def test_subscriber_changes_queue_their_events(api: Api, emitted: Recorder) -> None:
    hooks = await create(api, events=["subscriber.subscribed", "subscriber.unsubscribed"])
    created = await api.client.post(
        f"{BASE}/subscribers", json={"email": unique_email("hooked")}, headers=api.owner
    )
    assert created.status_code == 201
    sid = created.json()["id"]
    left = await api.client.patch(
        f"{BASE}/subscribers/{sid}", json={"status": "UNSUBSCRIBED"}, headers=api.owner
    )
    await api.drain_events()
    queued = await messages(api, hooks["id"])
    assert [m["type"] for m in queued] == ["subscriber.subscribed", "subscriber.unsubscribed"]
    assert queued[0]["data"] == created.json()
    assert queued[1]["data"] == left.json()
    assert [p for p in emitted.of("subscriber.unsubscribed") if p["id"] == sid] == [
        queued[1]["data"]
    ]


async def queued_jobs(api: Api, kind: str) -> list[dict[str, Any]]:
    """The payloads of the `kind` jobs in the queue (the test apps run no worker)."""
    if api.state.fastdb.dialect == "postgresql":
        stmt = text("SELECT payload FROM pgqueuer WHERE entrypoint = :kind ORDER BY id")
    else:
        stmt = text("SELECT payload FROM jobs WHERE kind = :kind ORDER BY id")
    async with api.state.engine.connect() as conn:
        rows = (await conn.execute(stmt, {"kind": kind})).scalars().all()
    return [orjson.loads(bytes(raw)) for raw in rows]


async def run_job(api: Api, kind: str, payload: dict[str, Any]) -> None:
    """One job through its registered handler, as the worker runs it."""
    entry = api.state.jobs.registry.get(kind)
    assert entry is not None
    await entry.handler(Job(1, kind, payload, 1, datetime.now(UTC)))


async def test_submit_queues_its_fan_out_in_its_own_statement(api: Api, emitted: Recorder) -> None:
    unheard = await submit(api)  # no endpoint listens yet: no job at all
    hook = await create(api, events=["inquiry.sent"])
    heard = await submit(api)
    honeypot = await api.client.post(
        f"{BASE}/inquiries/submit",
        json={"name": "Bot", "email": unique_email("bot"), "message": "x", "website": "spam"},
    )
    assert honeypot.status_code == 201
    await api.drain_events()
    mine = {unheard, heard, honeypot.json()["id"]}
    fan_outs = [p for p in await queued_jobs(api, "inquiry.sent") if p["inquiryId"] in mine]
    assert fan_outs == [{"inquiryId": heard}]

    await run_job(api, "inquiry.sent", fan_outs[0])
    (realtime,) = [p for p in emitted.of("inquiry.sent") if p["id"] == heard]
    (queued,) = await messages(api, hook["id"])
    assert queued["type"] == "inquiry.sent"
    assert queued["data"] == realtime
    # ...and its delivery is a job of its own, naming the message only.
    async with api.state.sessionmaker() as session:
        (message_id,) = (
            await session.scalars(
                select(WebhookMessage.id).where(WebhookMessage.endpoint_id == int(hook["id"]))
            )
        ).all()
    assert {"messageId": str(message_id)} in await queued_jobs(api, "webhook.deliver")


async def test_a_fan_out_run_again_queues_nothing_new(api: Api) -> None:
    """A worker killed after the fan-out's commit and before the job was marked done runs it
    again: each endpoint still has one message (one webhook-id) for the event."""
    first = await create(api, events=["inquiry.sent"])
    second = await create(api, events=["inquiry.sent", "inquiry.updated"])
    inquiry_id = await submit(api)
    (fan_out,) = [p for p in await queued_jobs(api, "inquiry.sent") if p["inquiryId"] == inquiry_id]
    await run_job(api, "inquiry.sent", fan_out)
    await run_job(api, "inquiry.sent", fan_out)  # the crashed worker's job, run again
    for hook in (first, second):
        (queued,) = await messages(api, hook["id"])
        assert queued["data"]["id"] == inquiry_id
    # ...and one delivery job per message.
    async with api.state.sessionmaker() as session:
        ids = (
            await session.scalars(
                select(WebhookMessage.id).where(
                    WebhookMessage.endpoint_id.in_([int(first["id"]), int(second["id"])])
                )
            )
        ).all()
    delivering = [
        p for p in await queued_jobs(api, "webhook.deliver") if int(p["messageId"]) in ids
    ]
    assert len(delivering) == 2


async def test_a_burst_of_submits_fans_out_each_inquiry_once(api: Api) -> None:
    """A burst is one grouped INSERT (PostgreSQL): its SENT rows share one fan-out job
    (`inquiryIds`); every inquiry still gets one message per endpoint, run twice or not."""
    hook = await create(api, events=["inquiry.sent"])
    mine = set(await asyncio.gather(*(submit(api) for _ in range(24))))
    jobs = [
        p
        for p in await queued_jobs(api, "inquiry.sent")
        if mine & set(p.get("inquiryIds") or [p.get("inquiryId")])
    ]
    named = [i for p in jobs for i in p.get("inquiryIds") or [p["inquiryId"]]]
    assert sorted(named) == sorted(mine)  # each inquiry in exactly one job
    for payload in jobs:
        await run_job(api, "inquiry.sent", payload)
    await run_job(api, "inquiry.sent", jobs[0])  # a crashed worker's job, run again
    queued = await messages(api, hook["id"])
    assert sorted(m["data"]["id"] for m in queued) == sorted(mine)
    assert {m["type"] for m in queued} == {"inquiry.sent"}
