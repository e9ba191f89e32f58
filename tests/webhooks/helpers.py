"""Shared steps of the webhook tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from outreach.webhooks.models import WebhookEndpoint, WebhookMessage
from tests.support import BASE, Api

WEBHOOKS = f"{BASE}/webhooks"
PUBLIC_HOST = "hooks.example.test"  # the DNS stub answers it with a public address
PUBLIC_URL = f"https://{PUBLIC_HOST}/outreach"
PUBLIC_ADDRESS = "93.184.215.14"  # never dialled: creating an endpoint sends nothing
# The apps a test made endpoints on (conftest deletes them after the test).
USED: list[Api] = []


async def create(api: Api, url: str = PUBLIC_URL, **extra: Any) -> dict[str, Any]:
    USED.append(api)
    body = {"url": url, "events": ["inquiry.sent"], **extra}
    response = await api.client.post(WEBHOOKS, json=body, headers=api.owner)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def stored(api: Api, endpoint_id: str) -> WebhookEndpoint:
    async with api.state.sessionmaker() as session:
        row: WebhookEndpoint = (
            await session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.id == int(endpoint_id))
            )
        ).one()
        return row


async def message(api: Api, message_key: str) -> WebhookMessage:
    async with api.state.sessionmaker() as session:
        row: WebhookMessage = (
            await session.scalars(
                select(WebhookMessage).where(
                    WebhookMessage.id == int(message_key.removeprefix("msg_"))
                )
            )
        ).one()
        return row


async def queue_test(api: Api, endpoint_id: str) -> str:
    """POST /webhooks/{id}/test; the queued message's id."""
    response = await api.client.post(f"{WEBHOOKS}/{endpoint_id}/test", headers=api.owner)
    assert response.status_code == 202, response.text
    key: str = response.json()["messageId"]
    return key


async def deliveries(api: Api, endpoint_id: str, **params: Any) -> dict[str, Any]:
    response = await api.client.get(
        f"{WEBHOOKS}/{endpoint_id}/deliveries", params=params, headers=api.owner
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page
