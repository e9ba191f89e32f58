"""Every subscriber answer comes from one serializer (subscriber_json); SubscriberOut
documents it. This pins the two together for fresh, changed and deleted rows."""

from __future__ import annotations

from typing import Any

from outreach.subscribers.schemas import SubscriberOut, subscriber_json
from tests.support import BASE, Api, unique_email


def _pinned(payload: dict[str, Any]) -> None:
    properties = SubscriberOut.model_json_schema(by_alias=True)["properties"]
    assert set(payload) == set(properties)
    assert SubscriberOut.model_validate(payload).model_dump(mode="json", by_alias=True) == payload


async def test_the_serializer_is_the_documented_schema(api: Api) -> None:
    created = await api.client.post(
        f"{BASE}/subscribers", json={"email": unique_email("pin"), "name": "P"}, headers=api.owner
    )
    _pinned(created.json())
    sid = created.json()["id"]
    patched = await api.client.patch(
        f"{BASE}/subscribers/{sid}", json={"status": "UNSUBSCRIBED"}, headers=api.owner
    )
    _pinned(patched.json())
    assert patched.json()["unsubscribedAt"] is not None
    assert (
        await api.client.delete(f"{BASE}/subscribers/{sid}", headers=api.owner)
    ).status_code == 204
    restored = await api.client.post(f"{BASE}/subscribers/{sid}/restore", headers=api.owner)
    _pinned(restored.json())
    listed = await api.client.get(
        f"{BASE}/subscribers", params={"q": created.json()["email"]}, headers=api.owner
    )
    assert listed.json()["data"] == [restored.json()]


async def test_orm_rows_and_plain_rows_serialize_alike(api: Api) -> None:
    from sqlalchemy import select

    from outreach.subscribers.models import Subscriber

    created = await api.client.post(
        f"{BASE}/subscribers", json={"email": unique_email("row")}, headers=api.owner
    )
    async with api.state.sessionmaker() as session:
        orm = (
            await session.scalars(
                select(Subscriber).where(Subscriber.id == int(created.json()["id"]))
            )
        ).one()
        plain = {column.name: getattr(orm, column.key) for column in Subscriber.__table__.columns}
    assert subscriber_json(orm) == subscriber_json(plain) == created.json()
