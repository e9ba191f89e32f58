"""Shared steps of the webhook tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import select

from outreach.config import Settings
from outreach.models import migrate
from outreach.webhooks.models import WebhookEndpoint, WebhookMessage
from tests.support import BASE, PG_ADMIN, Api

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


async def new_database(var_dir: Path, kind: str) -> str:
    """A database of its own, migrated (kind: postgresql or sqlite)."""
    if kind == "sqlite":
        url = f"sqlite:///{(var_dir / f'webhooks-{uuid.uuid4().hex[:8]}.db').as_posix()}"
    else:
        name = f"outreach_webhooks_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    await migrate(Settings(database_url=url, app_env="test", var_dir=var_dir))
    return url


async def drop_database(url: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()
