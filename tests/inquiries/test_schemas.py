"""Every inquiry answer comes from one serializer (inquiry_json); InquiryOut documents it.
This pins the two together: same fields, same values, for fresh and changed rows."""

from __future__ import annotations

from typing import Any

from outreach.inquiries.schemas import InquiryOut, SubmitOut, inquiry_json, submitted_json
from tests.support import BASE, Api


def _pinned(model: type[Any], payload: dict[str, Any]) -> None:
    properties = model.model_json_schema(by_alias=True)["properties"]
    assert set(payload) == set(properties)
    assert model.model_validate(payload).model_dump(mode="json", by_alias=True) == payload


async def test_the_serializer_is_the_documented_schema(api: Api) -> None:
    submitted = await api.client.post(
        f"{BASE}/inquiries/submit",
        json={"name": "Pin", "email": "pin@example.com", "message": "m", "phone": "+84 1"},
    )
    _pinned(SubmitOut, submitted.json())
    inquiry_id = submitted.json()["id"]
    fresh = (await api.client.get(f"{BASE}/inquiries/{inquiry_id}", headers=api.owner)).json()
    _pinned(InquiryOut, fresh)
    patched = await api.client.patch(
        f"{BASE}/inquiries/{inquiry_id}",
        json={"note": "n", "status": "RESOLVED"},
        headers=api.owner,
    )
    _pinned(InquiryOut, patched.json())
    assert await api.client.delete(f"{BASE}/inquiries/{inquiry_id}", headers=api.owner)
    deleted = await api.client.get(
        f"{BASE}/inquiries/{inquiry_id}", params={"includeDeleted": "true"}, headers=api.owner
    )
    _pinned(InquiryOut, deleted.json())
    assert deleted.json()["deletedAt"] is not None


async def test_orm_rows_and_plain_rows_serialize_alike(api: Api) -> None:
    from sqlalchemy import select

    from outreach.inquiries.models import Inquiry

    made = await api.client.post(
        f"{BASE}/inquiries/submit", json={"name": "Row", "email": "row@example.com", "message": "m"}
    )
    async with api.state.sessionmaker() as session:
        orm = (
            await session.scalars(select(Inquiry).where(Inquiry.id == int(made.json()["id"])))
        ).one()
        plain = {column.name: getattr(orm, column.key) for column in Inquiry.__table__.columns}
    assert inquiry_json(orm) == inquiry_json(plain)
    assert submitted_json(orm.id, orm.created_at) == made.json()
