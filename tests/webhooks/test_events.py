"""Events become webhook messages in the transaction of their change (admin routes): the
payload is the realtime event's, only subscribed active endpoints get one, and a change
that rolls back queues nothing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import select

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
