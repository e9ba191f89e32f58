"""GET/POST/DELETE /blocklist (API.md section 10) on PostgreSQL and SQLite, and what an entry
does to the public POSTs of the same replica the moment it is created or removed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from outreach.blocklist.schemas import BlockOut
from outreach.inquiries.models import Inquiry
from outreach.subscribers.models import Subscriber
from tests.support import BASE, Api

BLOCKLIST = f"{BASE}/blocklist"
SUBMIT = f"{BASE}/inquiries/submit"
SUBSCRIBE = f"{BASE}/subscribers/subscribe"


def unique_domain() -> str:
    return f"b{uuid.uuid4().hex[:10]}.example"


@pytest.fixture
async def cleanup(api: Api) -> AsyncIterator[list[str]]:
    """Ids of entries a test made, deleted after it (the databases are shared by the run)."""
    made: list[str] = []
    yield made
    for entry_id in made:
        await api.client.delete(f"{BLOCKLIST}/{entry_id}", headers=api.owner)


async def add(api: Api, made: list[str], **body: Any) -> dict[str, Any]:
    answer = await api.client.post(BLOCKLIST, json=body, headers=api.owner)
    assert answer.status_code == 201, answer.text
    made.append(answer.json()["id"])
    entry: dict[str, Any] = answer.json()
    return entry


async def test_create_list_and_delete(api: Api, cleanup: list[str]) -> None:
    domain = unique_domain()
    entry = await add(api, cleanup, kind="domain", value=domain.upper(), reason="flood")
    assert entry["value"] == domain
    assert entry["kind"] == "domain"
    assert entry["reason"] == "flood"
    assert entry["createdBy"] == "owner-1"
    assert entry["expiresAt"] is None
    assert set(entry) == set(BlockOut.model_json_schema(by_alias=True)["properties"])
    assert BlockOut.model_validate(entry).model_dump(mode="json", by_alias=True) == entry

    listed = await api.client.get(
        BLOCKLIST, params={"q": domain[:8], "kind": "domain"}, headers=api.owner
    )
    assert listed.json()["data"] == [entry]
    assert listed.json()["meta"]["total"] == 1
    other_kind = await api.client.get(
        BLOCKLIST, params={"q": domain[:8], "kind": "email"}, headers=api.owner
    )
    assert other_kind.json()["data"] == []

    assert (
        await api.client.delete(f"{BLOCKLIST}/{entry['id']}", headers=api.owner)
    ).status_code == 204
    again = await api.client.delete(f"{BLOCKLIST}/{entry['id']}", headers=api.owner)
    assert again.status_code == 404
    gone = await api.client.get(BLOCKLIST, params={"q": domain[:8]}, headers=api.owner)
    assert gone.json()["data"] == []


async def test_pages_are_keyset_pages(api: Api, cleanup: list[str]) -> None:
    prefix = uuid.uuid4().hex[:8]
    for n in range(5):
        await add(api, cleanup, kind="email", value=f"{prefix}-{n}@page.example")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"q": prefix, "limit": 2, "order": "asc"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get(BLOCKLIST, params=params, headers=api.owner)).json()
        seen += [item["value"] for item in page["data"]]
        cursor = page["meta"]["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"{prefix}-{n}@page.example" for n in range(5)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "email", "value": "nope"}, "value"),
        ({"kind": "domain", "value": "-x.example"}, "value"),
        ({"kind": "ip", "value": "10.0.0.0/40"}, "value"),
        ({"kind": "phone", "value": "123"}, "kind"),
        ({"kind": "ip", "value": "10.1.2.3", "reason": "x" * 201}, "reason"),
        ({"kind": "ip", "value": "10.1.2.3", "expiresAt": "2020-01-01T00:00:00Z"}, "expiresAt"),
        ({"kind": "ip", "value": "10.1.2.3", "extra": 1}, "extra"),
    ],
)
async def test_invalid_entries_are_422(api: Api, body: dict[str, Any], field: str) -> None:
    answer = await api.client.post(BLOCKLIST, json=body, headers=api.owner)
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]


async def test_the_same_entry_twice_is_409_after_normalizing(api: Api, cleanup: list[str]) -> None:
    domain = unique_domain()
    await add(api, cleanup, kind="email", value=f"dup@{domain}")
    again = await api.client.post(
        BLOCKLIST, json={"kind": "email", "value": f"DUP@{domain.upper()}"}, headers=api.owner
    )
    assert again.status_code == 409
    assert again.json()["type"].endswith("/already-listed")
    await add(api, cleanup, kind="ip", value="192.0.2.0/25")
    overlap = await api.client.post(
        BLOCKLIST, json={"kind": "ip", "value": "192.0.2.77/25"}, headers=api.owner
    )
    assert overlap.status_code == 409  # the same network, written with host bits


async def test_permissions_follow_the_seed(api: Api, cleanup: list[str]) -> None:
    employee = api.auth("EMPLOYEE", sub="emp-1")
    cashier = api.auth("CASHIER", sub="cash-1")
    made = await api.client.post(
        BLOCKLIST, json={"kind": "domain", "value": unique_domain()}, headers=employee
    )
    assert made.status_code == 201
    cleanup.append(made.json()["id"])
    assert made.json()["createdBy"] == "emp-1"
    assert (await api.client.get(BLOCKLIST, headers=employee)).status_code == 200
    denied = await api.client.delete(f"{BLOCKLIST}/{made.json()['id']}", headers=employee)
    assert denied.status_code == 403
    assert (await api.client.get(BLOCKLIST, headers=cashier)).status_code == 403
    refused = await api.client.post(
        BLOCKLIST, json={"kind": "domain", "value": unique_domain()}, headers=cashier
    )
    assert refused.status_code == 403
    assert (await api.client.get(BLOCKLIST)).status_code == 401


async def _count(api: Api, model: Any, email: str) -> int:
    async with api.state.sessionmaker() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(model).where(model.email == email)
            )
            or 0
        )


async def test_an_entry_matches_at_once_and_stops_when_deleted(
    api: Api, cleanup: list[str]
) -> None:
    domain = unique_domain()
    entry = await add(api, cleanup, kind="domain", value=domain)
    email = f"someone@mail.{domain}"
    blocked = await api.client.post(
        SUBMIT, json={"name": "S", "email": email, "message": "buy now"}
    )
    assert blocked.status_code == 201
    async with api.state.sessionmaker() as session:
        row = await session.get(Inquiry, int(blocked.json()["id"]))
        assert row is not None
        assert (row.status, row.spam_reason) == ("CANCELLED", "blocklist")
    assert (await api.client.post(SUBSCRIBE, json={"email": email})).status_code == 202
    assert await _count(api, Subscriber, email) == 0  # answered like any subscribe, not stored

    await api.client.delete(f"{BLOCKLIST}/{entry['id']}", headers=api.owner)
    cleanup.remove(entry["id"])
    fine = await api.client.post(SUBMIT, json={"name": "S", "email": email, "message": "hi"})
    async with api.state.sessionmaker() as session:
        row = await session.get(Inquiry, int(fine.json()["id"]))
        assert row is not None
        assert (row.status, row.spam_reason) == ("SENT", None)
    assert (await api.client.post(SUBSCRIBE, json={"email": email})).status_code == 202
    assert await _count(api, Subscriber, email) == 1


async def test_an_entry_with_an_expiry_stops_matching_after_it(
    api: Api, cleanup: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    email = f"soon@{unique_domain()}"
    expires = datetime.now(UTC) + timedelta(minutes=5)
    entry = await add(api, cleanup, kind="email", value=email, expiresAt=expires.isoformat())
    assert entry["expiresAt"] is not None
    first = await api.client.post(SUBMIT, json={"name": "S", "email": email, "message": "m"})
    later = datetime.now(UTC) + timedelta(minutes=6)
    import time

    monkeypatch.setattr(time, "time", later.timestamp)  # six minutes pass (matcher's clock)
    second = await api.client.post(SUBMIT, json={"name": "S", "email": email, "message": "m"})
    async with api.state.sessionmaker() as session:
        one = await session.get(Inquiry, int(first.json()["id"]))
        two = await session.get(Inquiry, int(second.json()["id"]))
    assert one is not None
    assert two is not None
    assert one.spam_reason == "blocklist"
    assert two.spam_reason is None
