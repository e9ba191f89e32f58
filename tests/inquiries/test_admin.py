"""Admin inquiry routes: list, get, transitions, bulk status, soft delete and restore, events."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import structlog

from outreach.inquiries.models import Inquiry
from outreach.inquiries.schemas import InquiryOut
from tests.support import BASE, Api, Recorder, unique_email

INQUIRIES = f"{BASE}/inquiries"


@pytest.fixture
def events(api: Api, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(api.state.realtime, "emit", recorder.emit)
    return recorder


async def submit(api: Api, marker: str, **overrides: str) -> str:
    body = {"name": f"Khách {marker}", "email": unique_email(), "message": f"Hỏi {marker}"}
    body.update(overrides)
    response = await api.client.post(f"{INQUIRIES}/submit", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_submit_emits_inquiry_sent_to_every_reader_role(api: Api, events: Recorder) -> None:
    marker = uuid.uuid4().hex
    with structlog.testing.capture_logs() as logs:
        inquiry_id = await submit(api, marker)
        await api.drain_events()
    sent = [(p, rooms) for name, p, rooms in events.calls if name == "inquiry.sent"]
    assert len(sent) == 1
    payload, rooms = sent[0]
    assert payload["id"] == inquiry_id
    assert payload["status"] == "SENT"
    assert payload["message"] == f"Hỏi {marker}"
    assert payload["deletedAt"] is None
    assert rooms == ["role:CASHIER", "role:EMPLOYEE", "role:OWNER"]
    line = [entry for entry in logs if entry.get("inquiryId") == inquiry_id]
    assert line, logs
    rooms_json = '["role:CASHIER","role:EMPLOYEE","role:OWNER"]'
    assert line[0]["event"] == f"Inquiry SENT | inquiryId: {inquiry_id} | rooms: {rooms_json}"
    assert line[0]["rooms"] == rooms_json
    assert line[0]["log_level"] == "info"


async def test_honeypot_notifies_nobody(api: Api, events: Recorder) -> None:
    await submit(api, "spam", website="http://spam.example")
    await api.drain_events()
    assert events.of("inquiry.sent") == []


async def test_list_filters_and_pages_through_every_row_once(api: Api) -> None:
    marker = uuid.uuid4().hex
    ids = [await submit(api, marker) for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"q": marker, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await api.client.get(INQUIRIES, params=params, headers=api.owner)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["meta"]["total"] == 5
        assert body["meta"]["limit"] == 2
        seen += [item["id"] for item in body["data"]]
        cursor = body["meta"]["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first
    asc = await api.client.get(INQUIRIES, params={"q": marker, "order": "asc"}, headers=api.owner)
    assert [item["id"] for item in asc.json()["data"]] == ids


async def test_q_is_case_insensitive_for_vietnamese(api: Api) -> None:
    marker = uuid.uuid4().hex[:8]
    inquiry_id = await submit(api, marker, name=f"Trần Thị Ánh {marker}")
    for q in (f"ánh {marker}", f"ÁNH {marker}", f"Ánh {marker}".upper()):
        response = await api.client.get(INQUIRIES, params={"q": q}, headers=api.owner)
        assert [i["id"] for i in response.json()["data"]] == [inquiry_id], q


async def test_status_email_and_date_filters(pg_api: Api) -> None:
    marker = uuid.uuid4().hex
    email = unique_email("filter")
    first = await submit(pg_api, marker, email=email)
    second = await submit(pg_api, marker)
    patched = await pg_api.client.patch(
        f"{INQUIRIES}/{second}", json={"status": "RESOLVED"}, headers=pg_api.owner
    )
    assert patched.status_code == 200
    by_status = await pg_api.client.get(
        INQUIRIES,
        params=[("q", marker), ("status", "RESOLVED"), ("status", "IN_PROGRESS")],
        headers=pg_api.owner,
    )
    assert [i["id"] for i in by_status.json()["data"]] == [second]
    by_email = await pg_api.client.get(
        INQUIRIES, params={"email": email.upper()}, headers=pg_api.owner
    )
    assert [i["id"] for i in by_email.json()["data"]] == [first]
    future = await pg_api.client.get(
        INQUIRIES, params={"q": marker, "createdFrom": "2999-01-01"}, headers=pg_api.owner
    )
    assert future.json()["data"] == []
    today = await pg_api.client.get(
        INQUIRIES,
        params={"q": marker, "createdFrom": "2000-01-01T00:00:00Z", "createdTo": "2999-12-31"},
        headers=pg_api.owner,
    )
    assert today.json()["meta"]["total"] == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"status": "LOST"}, "status"),
        ({"order": "sideways"}, "order"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"createdFrom": "yesterday"}, "createdFrom"),
    ],
)
async def test_bad_query_is_422_naming_the_parameter(
    pg_api: Api, params: dict[str, str], field: str
) -> None:
    response = await pg_api.client.get(INQUIRIES, params=params, headers=pg_api.owner)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_get_one_and_404s(api: Api) -> None:
    inquiry_id = await submit(api, "get")
    response = await api.client.get(f"{INQUIRIES}/{inquiry_id}", headers=api.owner)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == inquiry_id
    assert body["clientIp"] == "203.0.113.7"
    assert set(body) == {
        "id", "name", "email", "phone", "subject", "message", "source", "status", "note",
        "spamReason", "assigneeId", "priority", "firstRespondedAt", "resolvedAt",
        "clientIp", "userAgent", "createdAt", "updatedAt", "deletedAt",
    }  # fmt: skip
    for unknown in ("1", "99999999999999999999", "abc", str(2**63)):
        missing = await api.client.get(f"{INQUIRIES}/{unknown}", headers=api.owner)
        assert missing.status_code == 404, unknown
        assert missing.json()["type"].endswith("/not-found")


ALLOWED = {
    "SENT": {"IN_PROGRESS", "RESOLVED", "CANCELLED"},
    "IN_PROGRESS": {"SENT", "RESOLVED", "CANCELLED"},
    "RESOLVED": {"IN_PROGRESS"},
    "CANCELLED": {"SENT"},
}
PATH_TO = {
    "SENT": [],
    "IN_PROGRESS": ["IN_PROGRESS"],
    "RESOLVED": ["RESOLVED"],
    "CANCELLED": ["CANCELLED"],
}


@pytest.mark.parametrize("start", list(ALLOWED))
@pytest.mark.parametrize("target", list(ALLOWED))
async def test_every_transition(pg_api: Api, start: str, target: str) -> None:
    inquiry_id = await submit(pg_api, "transition")
    url = f"{INQUIRIES}/{inquiry_id}"
    for step in PATH_TO[start]:
        assert (
            await pg_api.client.patch(url, json={"status": step}, headers=pg_api.owner)
        ).status_code == 200
    before = (await pg_api.client.get(url, headers=pg_api.owner)).json()
    response = await pg_api.client.patch(url, json={"status": target}, headers=pg_api.owner)
    if target == start:
        assert response.status_code == 200
        assert response.json() == before  # a no-op: updatedAt stays
    elif target in ALLOWED[start]:
        assert response.status_code == 200
        assert response.json()["status"] == target
        assert response.json()["updatedAt"] >= before["updatedAt"]
    else:
        assert response.status_code == 409
        assert response.json()["type"].endswith("/invalid-transition")
        assert (await pg_api.client.get(url, headers=pg_api.owner)).json()["status"] == start


async def test_patch_note_emits_inquiry_updated(api: Api, events: Recorder) -> None:
    inquiry_id = await submit(api, "note")
    url = f"{INQUIRIES}/{inquiry_id}"
    response = await api.client.patch(
        url, json={"note": "Gọi lại lúc 3h"}, headers=api.auth("EMPLOYEE", sub="emp-7")
    )
    assert response.status_code == 200
    assert response.json()["note"] == "Gọi lại lúc 3h"
    await api.drain_events()
    updated = events.of("inquiry.updated")
    assert updated == [
        {
            "id": inquiry_id,
            "status": "SENT",
            "note": "Gọi lại lúc 3h",
            "assigneeId": None,
            "priority": "NORMAL",
            "spamReason": None,
            "updatedAt": response.json()["updatedAt"],
            "deletedAt": None,
            "updatedBy": "emp-7",
        }
    ]
    cleared = await api.client.patch(url, json={"note": None}, headers=api.owner)
    assert cleared.json()["note"] is None
    # the same status again: no change, no event
    await api.drain_events()
    events.calls.clear()
    same = await api.client.patch(url, json={"status": "SENT"}, headers=api.owner)
    assert same.status_code == 200
    await api.drain_events()
    assert events.of("inquiry.updated") == []


@pytest.mark.parametrize(
    "body", [{}, {"status": None}, {"note": "n" * 2001}, {"status": "DONE"}, {"colour": "red"}]
)
async def test_bad_patch_is_422(pg_api: Api, body: dict[str, Any]) -> None:
    inquiry_id = await submit(pg_api, "badpatch")
    response = await pg_api.client.patch(
        f"{INQUIRIES}/{inquiry_id}", json=body, headers=pg_api.owner
    )
    assert response.status_code == 422, response.text


async def test_bulk_status_cancels_a_flood(api: Api) -> None:
    marker = uuid.uuid4().hex
    ids = [await submit(api, marker) for _ in range(4)]
    resolved = ids[0]
    await api.client.patch(
        f"{INQUIRIES}/{resolved}", json={"status": "RESOLVED"}, headers=api.owner
    )
    response = await api.client.post(
        f"{INQUIRIES}/bulk-status",
        json={"ids": [*ids, ids[1], "123"], "status": "CANCELLED"},
        headers=api.auth("EMPLOYEE"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["updated"] == ids[1:]
    assert {"id": resolved, "reason": "invalid-transition"} in body["skipped"]
    assert {"id": "123", "reason": "not-found"} in body["skipped"]
    listed = await api.client.get(
        INQUIRIES, params={"q": marker, "status": "CANCELLED"}, headers=api.owner
    )
    assert sorted(i["id"] for i in listed.json()["data"]) == sorted(ids[1:])


async def test_bulk_status_bounds(pg_api: Api) -> None:
    too_many = [str(i) for i in range(1, 502)]
    response = await pg_api.client.post(
        f"{INQUIRIES}/bulk-status",
        json={"ids": too_many, "status": "CANCELLED"},
        headers=pg_api.owner,
    )
    assert response.status_code == 422
    bad_id = await pg_api.client.post(
        f"{INQUIRIES}/bulk-status",
        json={"ids": ["1", "2", "abc"], "status": "CANCELLED"},
        headers=pg_api.owner,
    )
    assert bad_id.status_code == 422
    assert [e["field"] for e in bad_id.json()["errors"]] == ["ids.2"]
    empty = await pg_api.client.post(
        f"{INQUIRIES}/bulk-status", json={"ids": [], "status": "CANCELLED"}, headers=pg_api.owner
    )
    assert empty.status_code == 422


async def test_soft_delete_and_restore(api: Api, events: Recorder) -> None:
    marker = uuid.uuid4().hex
    inquiry_id = await submit(api, marker)
    url = f"{INQUIRIES}/{inquiry_id}"
    assert (await api.client.delete(url, headers=api.owner)).status_code == 204
    assert (await api.client.get(url, headers=api.owner)).status_code == 404
    assert (await api.client.delete(url, headers=api.owner)).status_code == 404
    assert (await api.client.patch(url, json={"note": "x"}, headers=api.owner)).status_code == 404
    listed = await api.client.get(INQUIRIES, params={"q": marker}, headers=api.owner)
    assert listed.json()["data"] == []
    with_deleted = await api.client.get(
        INQUIRIES, params={"q": marker, "includeDeleted": "true"}, headers=api.owner
    )
    assert [i["id"] for i in with_deleted.json()["data"]] == [inquiry_id]
    assert with_deleted.json()["data"][0]["deletedAt"] is not None
    one = await api.client.get(url, params={"includeDeleted": "true"}, headers=api.owner)
    assert one.status_code == 200
    restored = await api.client.post(f"{url}/restore", headers=api.owner)
    assert restored.status_code == 200
    assert restored.json()["deletedAt"] is None
    again = await api.client.post(f"{url}/restore", headers=api.owner)
    assert again.status_code == 200
    assert again.json() == restored.json()
    await api.drain_events()
    kinds = [(p["id"], p["deletedAt"] is None) for p in events.of("inquiry.updated")]
    assert kinds == [(inquiry_id, False), (inquiry_id, True)]


async def test_roles(pg_api: Api) -> None:
    inquiry_id = await submit(pg_api, "roles")
    url = f"{INQUIRIES}/{inquiry_id}"
    cashier = pg_api.auth("CASHIER")
    employee = pg_api.auth("EMPLOYEE")
    assert (await pg_api.client.get(url, headers=cashier)).status_code == 200
    assert (await pg_api.client.patch(url, json={"note": "x"}, headers=cashier)).status_code == 403
    assert (await pg_api.client.delete(url, headers=employee)).status_code == 403
    assert (await pg_api.client.post(f"{url}/restore", headers=employee)).status_code == 403
    hidden = await pg_api.client.get(INQUIRIES, params={"includeDeleted": "true"}, headers=employee)
    assert hidden.status_code == 403
    forbidden = await pg_api.client.get(url, headers=pg_api.auth("VISITOR"))
    assert forbidden.status_code == 403
    assert forbidden.json()["type"].endswith("/forbidden")
    anonymous = await pg_api.client.get(url)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"


async def test_the_hot_path_payload_is_the_inquiry_schema(api: Api, events: Recorder) -> None:
    """inquiry.sent's payload (built without pydantic) equals the InquiryOut of the row."""
    inquiry_id = await submit(api, "payload", phone="+84 1", subject="S", source="https://x")
    await api.drain_events()
    (payload,) = [p for p in events.of("inquiry.sent") if p["id"] == inquiry_id]
    async with api.state.sessionmaker() as session:
        row = await session.get(Inquiry, int(inquiry_id))
        assert row is not None
        assert payload == InquiryOut.model_validate(row).model_dump(mode="json", by_alias=True)


async def test_list_items_are_the_inquiry_schema(api: Api) -> None:
    """A list page (built without pydantic) shows each row as GET /inquiries/{id} does:
    changed, noted, deleted and untouched rows alike."""
    email = unique_email("page")
    plain = await submit(api, "plain", email=email)
    full = await submit(api, "full", email=email, phone="+84 2", subject="S", source="https://y")
    changed = await submit(api, "changed", email=email)
    gone = await submit(api, "gone", email=email)
    patched = await api.client.patch(
        f"{INQUIRIES}/{changed}",
        json={"status": "IN_PROGRESS", "note": "gọi lại"},
        headers=api.owner,
    )
    assert patched.status_code == 200
    assert (await api.client.delete(f"{INQUIRIES}/{gone}", headers=api.owner)).status_code == 204
    page = await api.client.get(
        INQUIRIES, params={"email": email, "includeDeleted": "true"}, headers=api.owner
    )
    assert page.status_code == 200
    items = page.json()["data"]
    assert [item["id"] for item in items] == [gone, changed, full, plain]
    for item in items:
        one = await api.client.get(
            f"{INQUIRIES}/{item['id']}", params={"includeDeleted": "true"}, headers=api.owner
        )
        assert item == one.json()
        assert item == InquiryOut.model_validate(one.json()).model_dump(mode="json", by_alias=True)
    assert items[0]["deletedAt"] is not None
    assert items[1]["updatedAt"] != items[1]["createdAt"]
