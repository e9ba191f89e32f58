"""Idempotency keys kept in the database: in flight, stale claims, expiry and purge."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import delete, func, insert, select, update

from outreach.db.base import utcnow
from outreach.idempotency.models import IdempotencyKey
from outreach.idempotency.service import purge_expired, request_hash
from outreach.inquiries.schemas import InquirySubmit
from tests.support import BASE, Api, unique_email

SUBMIT = f"{BASE}/inquiries/submit"


def body() -> dict[str, str]:
    return {"name": "Lan", "email": unique_email(), "message": "Chào"}


async def claim(api: Api, key: str, payload: dict[str, str], *, age: timedelta) -> None:
    created = utcnow() - age
    async with api.state.sessionmaker() as session:
        await session.execute(
            insert(IdempotencyKey).values(
                scope="inquiries.submit",
                key=key,
                request_hash=request_hash(
                    InquirySubmit.model_validate(payload).model_dump(
                        mode="json", exclude={"altcha"}
                    )
                ),
                state="running",
                created_at=created,
                expires_at=created + timedelta(hours=24),
            )
        )
        await session.commit()


async def expire(api: Api, key: str) -> None:
    """Moves the key's expiry into the past, as if its 24 h were over."""
    async with api.state.sessionmaker() as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def send(api: Api, payload: dict[str, str], key: str) -> httpx.Response:
    """POST the inquiry under this Idempotency-Key."""
    return await api.client.post(SUBMIT, json=payload, headers={"Idempotency-Key": key})


async def test_same_key_while_running_is_409(api: Api) -> None:
    payload = body()
    key = "running-" + payload["email"]
    await claim(api, key, payload, age=timedelta(seconds=1))
    response = await send(api, payload, key)
    assert response.status_code == 409
    assert response.json()["type"].endswith("/idempotency-in-flight")


async def test_a_claim_left_by_a_dead_request_is_taken_over(api: Api) -> None:
    payload = body()
    key = "stale-" + payload["email"]
    await claim(api, key, payload, age=timedelta(minutes=5))
    response = await send(api, payload, key)
    assert response.status_code == 201
    replay = await send(api, payload, key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == response.json()


async def test_concurrent_requests_with_one_key_store_one_inquiry(pg_api: Api) -> None:
    payload = body()
    key = {"Idempotency-Key": "race-" + payload["email"]}
    answers = await asyncio.gather(
        *(pg_api.client.post(SUBMIT, json=payload, headers=key) for _ in range(8))
    )
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409}
    assert statuses.count(201) >= 1
    ids = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(ids) == 1  # every 201 is the same inquiry, first answer or replay


async def test_expired_keys_are_reusable_and_purged(api: Api) -> None:
    payload = body()
    key = "expired-" + payload["email"]
    first = await send(api, payload, key)
    await expire(api, key)
    # After 24 h the key means nothing: the same body is a new inquiry.
    second = await send(api, payload, key)
    assert second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    await expire(api, key)
    await purge_expired(api.state.fastdb)
    async with api.state.sessionmaker() as session:
        left = await session.scalar(
            select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.key == key)
        )
        await session.execute(delete(IdempotencyKey).where(IdempotencyKey.key == key))
        await session.commit()
    assert left == 0


async def test_a_failed_request_releases_its_key(pg_api: Api) -> None:
    payload = body()
    key = "fails-" + payload["email"]
    broken = dict(payload, message="x\x00")  # refused before the key is claimed
    assert (await send(pg_api, broken, key)).status_code == 422
    ok = await send(pg_api, payload, key)
    assert ok.status_code == 201
