"""The public subscriber routes' events reach webhooks: a subscribe (single opt-in), the
double opt-in confirmation and the token unsubscribe each queue their fan-out job in the
change's own statement (only while an endpoint listens), and a real receiver process gets
the event, signed for `standardwebhooks`, with the realtime event's payload."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from outreach.jobs import Job
from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import CONFIRM, make_token, token_secrets
from outreach.webhooks.models import WebhookMessage
from outreach.webhooks.service import webhook as webhook_service
from tests.receivers import Receiver
from tests.support import BASE, Api, Recorder, unique_email
from tests.webhooks.helpers import create
from tests.webhooks.test_events import queued_jobs

SUBSCRIBE = f"{BASE}/subscribers/subscribe"
EVENTS = ["subscriber.subscribed", "subscriber.unsubscribed"]


@pytest.fixture
def emitted(hooked_api: Api, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(hooked_api.state.realtime, "emit", recorder.emit)
    return recorder


async def subscriber_row(api: Api, email: str) -> Subscriber:
    async with api.state.sessionmaker() as session:
        row: Subscriber = (
            await session.scalars(
                select(Subscriber).where(Subscriber.email == email, Subscriber.deleted_at.is_(None))
            )
        ).one()
        return row


async def fan_out_jobs(api: Api, kind: str, subscriber_id: str) -> list[dict[str, Any]]:
    return [p for p in await queued_jobs(api, kind) if p["subscriberId"] == subscriber_id]


async def run(api: Api, job: Job) -> None:
    entry = api.state.jobs.registry.get(job.kind)
    assert entry is not None
    await entry.handler(job)


async def deliver_queued(api: Api, endpoint_id: str) -> list[int]:
    """Every message queued for the endpoint, attempted once (as the worker would); their
    ids, oldest first."""
    async with api.state.sessionmaker() as session:
        ids = list(
            (
                await session.scalars(
                    select(WebhookMessage.id)
                    .where(
                        WebhookMessage.endpoint_id == int(endpoint_id),
                        WebhookMessage.state == "queued",
                    )
                    .order_by(WebhookMessage.id)
                )
            ).all()
        )
    for message_id in ids:
        assert await webhook_service.deliver(api.state, message_id) is True
    return ids


async def fan_out_and_deliver(
    api: Api, kind: str, subscriber_id: str, endpoint: dict[str, Any]
) -> None:
    (payload,) = await fan_out_jobs(api, kind, subscriber_id)
    await run(api, Job(1, kind, payload, 1, datetime.now(UTC)))
    assert len(await deliver_queued(api, endpoint["id"])) == 1


def received(receiver: Receiver, path: str, secret: str) -> list[dict[str, Any]]:
    """What the receiver got on `path`, each verified as a receiver would."""
    return [Webhook(secret).verify(r["body"], r["headers"]) for r in receiver.requests(path)]


async def test_a_public_subscribe_and_unsubscribe_reach_the_receiver(
    hooked_api: Api, receiver: Receiver, emitted: Recorder
) -> None:
    api = hooked_api
    path = f"/ok/public-{api.state.fastdb.dialect}-{unique_email('p').split('@')[0]}"
    endpoint = await create(api, url=receiver.url + path, events=EVENTS)
    email = unique_email("public")
    answer = await api.client.post(SUBSCRIBE, json={"email": email, "name": "Lan"})
    assert answer.status_code == 202
    row = await subscriber_row(api, email)
    await fan_out_and_deliver(api, "subscriber.subscribed", str(row.id), endpoint)

    token = make_token(token_secrets(api.settings), row.unsubscribe_selector)
    left = await api.client.post(f"{BASE}/subscribers/unsubscribe", json={"token": token})
    assert left.status_code == 200, left.text
    await fan_out_and_deliver(api, "subscriber.unsubscribed", str(row.id), endpoint)

    await api.drain_events()
    got = received(receiver, path, endpoint["secret"])
    assert [b["type"] for b in got] == EVENTS
    (subscribed,) = emitted.of("subscriber.subscribed")
    (unsubscribed,) = emitted.of("subscriber.unsubscribed")
    assert got[0]["data"] == subscribed  # the realtime event's payload
    assert got[1]["data"] == unsubscribed
    assert got[1]["data"]["status"] == "UNSUBSCRIBED"

    # Back from UNSUBSCRIBED is an event again (a second job); subscribing while ACTIVE
    # changes nothing (no third).
    for _ in range(2):
        again = await api.client.post(SUBSCRIBE, json={"email": email})
        assert again.status_code == 202
    assert len(await fan_out_jobs(api, "subscriber.subscribed", str(row.id))) == 2


async def test_a_double_opt_in_confirmation_reaches_the_receiver(
    hooked_api: Api, receiver: Receiver, emitted: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = hooked_api
    monkeypatch.setattr(api.settings, "subscribe_confirmation", "double")
    path = f"/ok/confirm-{api.state.fastdb.dialect}-{unique_email('c').split('@')[0]}"
    endpoint = await create(api, url=receiver.url + path, events=["subscriber.subscribed"])
    email = unique_email("double")
    assert (await api.client.post(SUBSCRIBE, json={"email": email})).status_code == 202
    row = await subscriber_row(api, email)
    assert row.status == "PENDING"
    assert await fan_out_jobs(api, "subscriber.subscribed", str(row.id)) == []  # not yet

    assert row.confirm_selector is not None
    token = make_token(token_secrets(api.settings), row.confirm_selector, purpose=CONFIRM)
    confirmed = await api.client.post(f"{BASE}/subscribers/confirm", json={"token": token})
    assert confirmed.status_code == 200, confirmed.text
    await fan_out_and_deliver(api, "subscriber.subscribed", str(row.id), endpoint)
    await api.drain_events()
    (got,) = received(receiver, path, endpoint["secret"])
    (realtime,) = emitted.of("subscriber.subscribed")
    assert got["type"] == "subscriber.subscribed"
    assert got["data"] == realtime
    assert got["data"]["status"] == "ACTIVE"


async def test_no_listening_endpoint_no_fan_out_job(hooked_api: Api) -> None:
    api = hooked_api
    await create(api, events=["inquiry.sent"], url="http://127.0.0.1:9/unused")
    email = unique_email("unheard")
    assert (await api.client.post(SUBSCRIBE, json={"email": email})).status_code == 202
    row = await subscriber_row(api, email)
    assert await fan_out_jobs(api, "subscriber.subscribed", str(row.id)) == []
    token = make_token(token_secrets(api.settings), row.unsubscribe_selector)
    left = await api.client.post(f"{BASE}/subscribers/unsubscribe", json={"token": token})
    assert left.status_code == 200
    assert await fan_out_jobs(api, "subscriber.unsubscribed", str(row.id)) == []


async def test_a_subscriber_fan_out_run_again_queues_nothing_new(hooked_api: Api) -> None:
    api = hooked_api
    endpoint = await create(api, events=EVENTS, url="http://127.0.0.1:9/never")
    email = unique_email("twice")
    assert (await api.client.post(SUBSCRIBE, json={"email": email})).status_code == 202
    row = await subscriber_row(api, email)
    (payload,) = await fan_out_jobs(api, "subscriber.subscribed", str(row.id))
    job = Job(7, "subscriber.subscribed", payload, 1, datetime.now(UTC))
    await run(api, job)
    await run(api, job)  # a crashed worker's job, run again
    async with api.state.sessionmaker() as session:
        queued = (
            await session.scalars(
                select(WebhookMessage.id).where(WebhookMessage.endpoint_id == int(endpoint["id"]))
            )
        ).all()
    assert len(queued) == 1
