"""Delivery attempts against real receiver processes, verified with the `standardwebhooks`
package (what receivers use), not with the service's own code: headers and body, a receiver
that fails then recovers (same `webhook-id`, valid signatures), one that hangs, one that
redirects, the retry schedule to its end, rotation's two signatures, auto-disable after 5
days of failures, drops, the SSRF refusal at delivery time, and the metrics."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import update
from standardwebhooks import Webhook, WebhookVerificationError

from outreach.webhooks.models import WebhookEndpoint
from outreach.webhooks.service import MAX_ATTEMPTS, RETRY_DELAYS_SECONDS
from outreach.webhooks.service import webhook as webhook_service
from tests.receivers import Receiver
from tests.support import Api, Dns
from tests.webhooks.helpers import (
    WEBHOOKS,
    create,
    deliveries,
    message,
    queue_test,
    stored,
)


async def deliver(api: Api, key: str) -> bool:
    return await webhook_service.deliver(api.state, int(key.removeprefix("msg_")))


def verified(secret: str, request: dict[str, Any]) -> Any:
    """The body, verified as a receiver would (raises WebhookVerificationError)."""
    return Webhook(secret).verify(request["body"], request["headers"])


async def set_endpoint(api: Api, endpoint_id: str, **values: Any) -> None:
    async with api.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(WebhookEndpoint).where(WebhookEndpoint.id == int(endpoint_id)).values(values)
        )


def counter(api: Api, result: str) -> float:
    value = api.state.metrics.registry.get_sample_value(
        "outreach_webhook_deliveries_total", {"result": result}
    )
    return value or 0.0


def test_the_retry_schedule() -> None:
    # API.md section 13: about 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then given up.
    assert RETRY_DELAYS_SECONDS == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert MAX_ATTEMPTS == 8


async def test_a_delivery_is_a_standard_webhook(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/ok/standard")
    succeeded = counter(hook_api, "succeeded")
    key = await queue_test(hook_api, created["id"])
    started = int(time.time())
    assert await deliver(hook_api, key) is True
    (got,) = receiver.requests("/ok/standard")
    headers = got["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == key
    assert started <= int(headers["webhook-timestamp"]) <= int(time.time())
    assert len(headers["webhook-signature"].split(" ")) == 1
    body = verified(created["secret"], got)
    assert body["type"] == "webhook.test"
    assert body["data"] == {"endpointId": created["id"], "url": created["url"]}
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    tampered = {**got, "body": got["body"].replace("webhook.test", "webhook.tset")}
    with pytest.raises(WebhookVerificationError):
        verified(created["secret"], tampered)

    (attempt,) = (await deliveries(hook_api, created["id"]))["data"]
    assert attempt["messageId"] == key
    assert attempt["attempt"] == 1
    assert attempt["status"] == "succeeded"
    assert attempt["responseStatus"] == 204
    assert attempt["error"] is None
    assert attempt["durationMs"] >= 0
    assert counter(hook_api, "succeeded") == succeeded + 1
    settled = await message(hook_api, key)
    assert settled.state == "succeeded"
    assert settled.body is None
    assert await deliver(hook_api, key) is True  # an at-least-once repeat sends nothing
    assert len(receiver.requests("/ok/standard")) == 1


async def test_fails_then_recovers_with_the_same_id(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/fail/2/recovers")
    failed = counter(hook_api, "failed")
    key = await queue_test(hook_api, created["id"])
    assert await deliver(hook_api, key) is False  # retry later
    assert await deliver(hook_api, key) is False
    assert await deliver(hook_api, key) is True
    got = receiver.requests("/fail/2/recovers")
    assert [r["headers"]["webhook-id"] for r in got] == [key] * 3
    bodies = [verified(created["secret"], r) for r in got]
    assert bodies[0] == bodies[1] == bodies[2]  # the same message on every try
    log = (await deliveries(hook_api, created["id"]))["data"]
    assert [(d["attempt"], d["status"], d["responseStatus"]) for d in log] == [
        (3, "succeeded", 204),
        (2, "failed", 500),
        (1, "failed", 500),
    ]
    assert {d["messageId"] for d in log} == {key}
    assert log[1]["error"] == "HTTP 500"
    assert counter(hook_api, "failed") == failed + 2
    assert (await stored(hook_api, created["id"])).failing_since is None  # recovered


async def test_a_hanging_receiver_times_out_after_10_s(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/hang/delivery")
    key = await queue_test(hook_api, created["id"])
    started = time.monotonic()
    assert await deliver(hook_api, key) is False
    assert 9.5 <= time.monotonic() - started < 13
    (attempt,) = (await deliveries(hook_api, created["id"]))["data"]
    assert attempt["status"] == "failed"
    assert attempt["responseStatus"] is None
    assert attempt["error"] == "timed out after 10 s"
    assert 9500 <= attempt["durationMs"] < 13000


async def test_a_redirect_is_not_followed(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/redirect/delivery")
    key = await queue_test(hook_api, created["id"])
    assert await deliver(hook_api, key) is False
    (attempt,) = (await deliveries(hook_api, created["id"]))["data"]
    assert attempt["status"] == "failed"
    assert attempt["responseStatus"] == 302
    assert attempt["error"] == "redirect not followed"
    assert receiver.requests("/landed") == []


async def test_an_endless_response_body_is_not_read(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/endless/delivery")
    key = await queue_test(hook_api, created["id"])
    started = time.monotonic()
    assert await deliver(hook_api, key) is True
    assert time.monotonic() - started < 3


async def test_given_up_after_the_last_attempt(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/status/503/gives-up")
    key = await queue_test(hook_api, created["id"])
    results = [await deliver(hook_api, key) for _ in range(MAX_ATTEMPTS)]
    assert results == [False] * (MAX_ATTEMPTS - 1) + [True]
    log = (await deliveries(hook_api, created["id"]))["data"]
    assert [d["attempt"] for d in log] == list(range(MAX_ATTEMPTS, 0, -1))
    assert {d["status"] for d in log} == {"failed"}
    settled = await message(hook_api, key)
    assert settled.state == "failed"
    assert settled.attempts == MAX_ATTEMPTS
    assert await deliver(hook_api, key) is True
    assert len(receiver.requests("/status/503/gives-up")) == MAX_ATTEMPTS


async def test_rotation_signs_with_both_secrets_for_24_h(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/ok/rotation")
    old = created["secret"]
    rotated = await hook_api.client.post(
        f"{WEBHOOKS}/{created['id']}/rotate-secret", headers=hook_api.owner
    )
    new = rotated.json()["secret"]
    await deliver(hook_api, await queue_test(hook_api, created["id"]))
    (both,) = receiver.requests("/ok/rotation")
    assert len(both["headers"]["webhook-signature"].split(" ")) == 2
    verified(old, both)  # a receiver still configured with the old secret
    verified(new, both)  # one already moved to the new one
    row = await stored(hook_api, created["id"])
    assert row.previous_secret_until is not None
    assert timedelta(hours=23, minutes=59) < row.previous_secret_until - row.updated_at
    assert row.previous_secret_until - row.updated_at <= timedelta(hours=24)

    # 24 h later the old secret signs no more.
    await set_endpoint(
        hook_api, created["id"], previous_secret_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    await deliver(hook_api, await queue_test(hook_api, created["id"]))
    _, after = receiver.requests("/ok/rotation")
    assert len(after["headers"]["webhook-signature"].split(" ")) == 1
    verified(new, after)
    with pytest.raises(WebhookVerificationError):
        verified(old, after)


async def test_disabled_after_5_days_of_failures(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/status/500/disable")
    first = await queue_test(hook_api, created["id"])
    await deliver(hook_api, first)
    row = await stored(hook_api, created["id"])
    assert row.failing_since is not None
    assert row.active

    # Failing for 4 days: still on.
    await set_endpoint(hook_api, created["id"], failing_since=datetime.now(UTC) - timedelta(days=4))
    await deliver(hook_api, await queue_test(hook_api, created["id"]))
    assert (await stored(hook_api, created["id"])).active

    # For 5 days: set inactive with a reason, and what is still queued is dropped.
    await set_endpoint(
        hook_api, created["id"], failing_since=datetime.now(UTC) - timedelta(days=5, minutes=1)
    )
    queued = await webhook_service_queue(hook_api, created["id"])
    later = await webhook_service_queue(hook_api, created["id"])
    await deliver(hook_api, queued)
    got = (await hook_api.client.get(f"{WEBHOOKS}/{created['id']}", headers=hook_api.owner)).json()
    assert got["active"] is False
    assert got["disabledReason"] is not None
    assert "5 days" in got["disabledReason"]
    sent = len(receiver.requests("/status/500/disable"))
    assert await deliver(hook_api, later) is True
    assert len(receiver.requests("/status/500/disable")) == sent  # not attempted
    assert (await message(hook_api, later)).state == "dropped"

    # Turned back on by the owner: a fresh start.
    back = await hook_api.client.patch(
        f"{WEBHOOKS}/{created['id']}", json={"active": True}, headers=hook_api.owner
    )
    assert back.json()["active"] is True
    assert back.json()["disabledReason"] is None
    assert (await stored(hook_api, created["id"])).failing_since is None


async def test_a_success_resets_the_failure_clock(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/fail/1/resets")
    await set_endpoint(hook_api, created["id"], failing_since=datetime.now(UTC) - timedelta(days=4))
    key = await queue_test(hook_api, created["id"])
    await deliver(hook_api, key)  # fails (still within 5 days)
    await deliver(hook_api, key)  # succeeds
    row = await stored(hook_api, created["id"])
    assert row.active
    assert row.failing_since is None


async def test_deleted_and_inactive_endpoints_get_nothing(
    hook_api: Api, receiver: Receiver
) -> None:
    dropped = counter(hook_api, "dropped")
    gone = await create(hook_api, url=f"{receiver.url}/ok/deleted")
    key = await queue_test(hook_api, gone["id"])
    await hook_api.client.delete(f"{WEBHOOKS}/{gone['id']}", headers=hook_api.owner)
    assert await deliver(hook_api, key) is True
    assert receiver.requests("/ok/deleted") == []

    paused = await create(hook_api, url=f"{receiver.url}/ok/paused")
    event = await webhook_service_queue(hook_api, paused["id"])
    await hook_api.client.patch(
        f"{WEBHOOKS}/{paused['id']}", json={"active": False}, headers=hook_api.owner
    )
    assert await deliver(hook_api, event) is True
    assert receiver.requests("/ok/paused") == []
    assert (await message(hook_api, event)).state == "dropped"
    (attempt,) = (await deliveries(hook_api, paused["id"]))["data"]
    assert attempt["status"] == "failed"
    assert "inactive" in attempt["error"]
    assert counter(hook_api, "dropped") == dropped + 1

    # The test route still reaches an inactive endpoint: it is asked for by its owner.
    await deliver(hook_api, await queue_test(hook_api, paused["id"]))
    assert len(receiver.requests("/ok/paused")) == 1


async def webhook_service_queue(api: Api, endpoint_id: str) -> str:
    """An event message (not the test route's), queued as the fan-out does."""
    async with api.state.sessionmaker() as session, session.begin():
        message_id = await webhook_service.queue(
            session, api.state, int(endpoint_id), "inquiry.sent", {"id": "1"}
        )
    return f"msg_{message_id}"


async def test_an_event_body_carries_the_payload(hook_api: Api, receiver: Receiver) -> None:
    created = await create(hook_api, url=f"{receiver.url}/ok/event")
    key = await webhook_service_queue(hook_api, created["id"])
    await deliver(hook_api, key)
    (got,) = receiver.requests("/ok/event")
    body = verified(created["secret"], got)
    assert body["type"] == "inquiry.sent"
    assert body["data"] == {"id": "1"}
    assert orjson.loads(got["body"]) == body


async def test_refused_at_delivery_when_dns_changed(
    pg_api: Api, dns: Dns, receiver: Receiver
) -> None:
    # WEBHOOK_ALLOW_PRIVATE=false. Public when created; the name now points at loopback,
    # where a real receiver listens: refused, recorded, nothing dialled, retried later.
    dns.names["moves.example.test"] = ["93.184.215.14"]
    created = await create(pg_api, url=f"https://moves.example.test:{receiver.port}/ok/moved")
    key = await queue_test(pg_api, created["id"])
    dns.names["moves.example.test"] = ["127.0.0.1"]
    assert await deliver(pg_api, key) is False
    (attempt,) = (await deliveries(pg_api, created["id"]))["data"]
    assert attempt["status"] == "failed"
    assert attempt["responseStatus"] is None
    assert attempt["error"].startswith("refused:")
    assert "127.0.0.1" in attempt["error"]
    assert receiver.requests("/ok/moved") == []


async def test_a_secret_that_cannot_be_opened_sends_nothing(
    hook_api: Api, receiver: Receiver
) -> None:
    created = await create(hook_api, url=f"{receiver.url}/ok/unsealable")
    await set_endpoint(hook_api, created["id"], secret="v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    key = await queue_test(hook_api, created["id"])
    assert await deliver(hook_api, key) is False
    (attempt,) = (await deliveries(hook_api, created["id"]))["data"]
    assert attempt["status"] == "failed"
    assert "TOKEN_SECRET" in attempt["error"]
    assert receiver.requests("/ok/unsealable") == []
