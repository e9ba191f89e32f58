"""Triage (API.md section 11) on PostgreSQL and SQLite: assignee and priority with their
filters, response times, internal comments, and the history of every change by several
actors, including bulk-status, spam marks, deletion and restore."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support import BASE, Api, Recorder

INQUIRIES = f"{BASE}/inquiries"
SUBMIT = f"{INQUIRIES}/submit"


async def submit(api: Api, tag: str = "", **extra: Any) -> str:
    email = f"t-{uuid.uuid4().hex[:10]}@example.com"
    body = {"name": "Khách", "email": email, "message": f"hỏi {tag}"}
    answer = await api.client.post(SUBMIT, json={**body, **extra})
    assert answer.status_code == 201, answer.text
    inquiry_id: str = answer.json()["id"]
    return inquiry_id


async def patch(api: Api, inquiry_id: str, body: dict[str, Any], **auth: Any) -> dict[str, Any]:
    headers = auth.get("headers", api.owner)
    answer = await api.client.patch(f"{INQUIRIES}/{inquiry_id}", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def history(api: Api, inquiry_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every entry, read a page of 2 at a time (the pages join up)."""
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 2, **params, **({"cursor": cursor} if cursor else {})}
        answer = await api.client.get(
            f"{INQUIRIES}/{inquiry_id}/history", params=query, headers=api.owner
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        entries += page["data"]
        cursor = page["meta"]["nextCursor"]
        if cursor is None:
            assert page["meta"]["total"] == len(entries)
            return entries


async def test_assignee_priority_and_their_filters(api: Api) -> None:
    tag = uuid.uuid4().hex[:10]
    first, second, third = [await submit(api, tag) for _ in range(3)]
    mine = await patch(api, first, {"assigneeId": "owner-1", "priority": "URGENT"})
    assert (mine["assigneeId"], mine["priority"]) == ("owner-1", "URGENT")
    await patch(api, second, {"assigneeId": "agent-2", "priority": "LOW"})
    fresh = (await api.client.get(f"{INQUIRIES}/{third}", headers=api.owner)).json()
    assert (fresh["assigneeId"], fresh["priority"]) == (None, "NORMAL")

    async def ids(**params: Any) -> list[str]:
        answer = await api.client.get(INQUIRIES, params={"q": tag, **params}, headers=api.owner)
        assert answer.status_code == 200, answer.text
        return sorted(i["id"] for i in answer.json()["data"])

    assert await ids(assigneeId="me") == [first]  # the caller is owner-1
    assert await ids(assigneeId="agent-2") == [second]
    assert await ids(assigneeId="none") == [third]
    assert await ids(priority=["URGENT", "LOW"]) == sorted([first, second])
    assert await ids(priority="NORMAL", assigneeId="none") == [third]

    unassigned = await patch(api, first, {"assigneeId": None})
    assert unassigned["assigneeId"] is None
    for wrong in (
        {"assigneeId": "x" * 129},
        {"assigneeId": ""},
        {"priority": None},
        {"priority": "HUGE"},
    ):
        refused = await api.client.patch(f"{INQUIRIES}/{first}", json=wrong, headers=api.owner)
        assert refused.status_code == 422, wrong
    bad_filter = await api.client.get(INQUIRIES, params={"priority": "HUGE"}, headers=api.owner)
    assert bad_filter.status_code == 422
    cashier = await api.client.patch(
        f"{INQUIRIES}/{first}", json={"priority": "HIGH"}, headers=api.auth("CASHIER")
    )
    assert cashier.status_code == 403


async def test_first_response_is_set_once_and_resolution_follows_reopening(api: Api) -> None:
    inquiry_id = await submit(api)
    sent = (await api.client.get(f"{INQUIRIES}/{inquiry_id}", headers=api.owner)).json()
    assert (sent["firstRespondedAt"], sent["resolvedAt"]) == (None, None)
    working = await patch(api, inquiry_id, {"status": "IN_PROGRESS"})
    responded = working["firstRespondedAt"]
    assert responded is not None
    assert working["resolvedAt"] is None
    resolved = await patch(api, inquiry_id, {"status": "RESOLVED"})
    assert resolved["resolvedAt"] is not None
    reopened = await patch(api, inquiry_id, {"status": "IN_PROGRESS"})
    assert reopened["resolvedAt"] is None  # reopened: not resolved any more
    await patch(api, inquiry_id, {"status": "SENT"})
    again = await patch(api, inquiry_id, {"status": "RESOLVED"})
    assert again["firstRespondedAt"] == responded  # set once, never changed after
    assert again["resolvedAt"] is not None
    assert again["resolvedAt"] >= resolved["resolvedAt"]


async def test_the_history_of_a_sequence_of_changes_by_several_actors(api: Api) -> None:
    employee = api.auth("EMPLOYEE", sub="emp-9")
    inquiry_id = await submit(api, "history")
    await patch(api, inquiry_id, {"status": "IN_PROGRESS", "note": "gọi lại"}, headers=employee)
    await patch(api, inquiry_id, {"status": "IN_PROGRESS"})  # a no-op records nothing
    await patch(api, inquiry_id, {"assigneeId": "emp-9", "priority": "HIGH"})
    comment = await api.client.post(
        f"{INQUIRIES}/{inquiry_id}/comments", json={"body": "  khách quen  "}, headers=employee
    )
    assert comment.status_code == 201
    bulk = await api.client.post(
        f"{INQUIRIES}/bulk-status",
        json={"ids": [inquiry_id], "status": "CANCELLED", "spam": True},
        headers=employee,
    )
    assert bulk.json()["updated"] == [inquiry_id]
    await patch(api, inquiry_id, {"status": "SENT"})
    assert (
        await api.client.delete(f"{INQUIRIES}/{inquiry_id}", headers=api.owner)
    ).status_code == 204
    # Read while deleted: with includeDeleted, by a role allowed to restore.
    while_deleted = await history(api, inquiry_id, includeDeleted="true")
    gone = await api.client.get(f"{INQUIRIES}/{inquiry_id}/history", headers=api.owner)
    assert gone.status_code == 404
    refused = await api.client.get(
        f"{INQUIRIES}/{inquiry_id}/history", params={"includeDeleted": "true"}, headers=employee
    )
    assert refused.status_code == 403
    restored = await api.client.post(f"{INQUIRIES}/{inquiry_id}/restore", headers=api.owner)
    assert restored.status_code == 200

    entries = await history(api, inquiry_id)
    summary = [(e["action"], e["actorId"], e["changes"]) for e in entries]
    assert summary == [
        ("created", None, {"status": {"from": None, "to": "SENT"}}),
        (
            "updated",
            "emp-9",
            {
                "status": {"from": "SENT", "to": "IN_PROGRESS"},
                "note": {"from": None, "to": "gọi lại"},
            },
        ),
        (
            "updated",
            "owner-1",
            {
                "assigneeId": {"from": None, "to": "emp-9"},
                "priority": {"from": "NORMAL", "to": "HIGH"},
            },
        ),
        ("commented", "emp-9", {}),
        (
            "updated",
            "emp-9",
            {
                "status": {"from": "IN_PROGRESS", "to": "CANCELLED"},
                "spamReason": {"from": None, "to": "staff"},
            },
        ),
        (
            "updated",
            "owner-1",
            {
                "status": {"from": "CANCELLED", "to": "SENT"},
                "spamReason": {"from": "staff", "to": None},
            },
        ),
        ("deleted", "owner-1", {}),
        ("restored", "owner-1", {}),
    ]
    assert while_deleted == entries[:-1]
    assert entries[0]["id"] == inquiry_id
    assert entries[0]["at"] == restored.json()["createdAt"]
    assert [int(e["id"]) for e in entries] == sorted(int(e["id"]) for e in entries)
    newest_first = await history(api, inquiry_id, order="desc")
    assert newest_first == entries[::-1]
    assert set(entries[1]) == {"id", "at", "actorId", "action", "changes"}


async def test_a_spam_submit_starts_its_history_as_it_was_created(api: Api) -> None:
    inquiry_id = await submit(api, website="filled")
    await patch(api, inquiry_id, {"status": "SENT"})  # staff rescue it
    entries = await history(api, inquiry_id)
    assert entries[0]["changes"] == {
        "status": {"from": None, "to": "CANCELLED"},
        "spamReason": {"from": None, "to": "honeypot"},
    }
    assert entries[1]["changes"]["spamReason"] == {"from": "honeypot", "to": None}


async def test_comments_are_internal_notes_read_oldest_first(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.drain_events()
    events = Recorder()
    monkeypatch.setattr(api.state.realtime, "emit", events.emit)
    inquiry_id = await submit(api)
    url = f"{INQUIRIES}/{inquiry_id}/comments"
    made = []
    for n in range(5):
        answer = await api.client.post(url, json={"body": f"  note {n}  "}, headers=api.owner)
        assert answer.status_code == 201, answer.text
        made.append(answer.json())
    assert made[0]["body"] == "note 0"
    assert set(made[0]) == {"id", "inquiryId", "body", "authorId", "createdAt"}
    assert (made[0]["inquiryId"], made[0]["authorId"]) == (inquiry_id, "owner-1")

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get(url, params=params, headers=api.auth("CASHIER"))).json()
        seen += page["data"]
        cursor = page["meta"]["nextCursor"]
        if cursor is None:
            break
    assert seen == made  # oldest first by default, every comment once
    desc = (await api.client.get(url, params={"order": "desc"}, headers=api.owner)).json()
    assert desc["data"] == made[::-1]

    await api.drain_events()
    commented = events.of("inquiry.commented")
    assert commented == made
    rooms = [r for name, _, r in events.calls if name == "inquiry.commented"][0]
    assert rooms == ["role:CASHIER", "role:EMPLOYEE", "role:OWNER"]

    for wrong in ({"body": "   "}, {"body": "x" * 5001}, {"text": "hi"}):
        assert (await api.client.post(url, json=wrong, headers=api.owner)).status_code == 422
    assert (
        await api.client.post(url, json={"body": "x"}, headers=api.auth("CASHIER"))
    ).status_code == 403
    assert (
        await api.client.post(f"{INQUIRIES}/123/comments", json={"body": "x"}, headers=api.owner)
    ).status_code == 404
    await api.client.delete(f"{INQUIRIES}/{inquiry_id}", headers=api.owner)
    assert (await api.client.get(url, headers=api.owner)).status_code == 404
    assert (await api.client.post(url, json={"body": "x"}, headers=api.owner)).status_code == 404
    kept = await api.client.get(url, params={"includeDeleted": "true"}, headers=api.owner)
    assert kept.json()["data"] == made


async def test_assigning_announces_to_the_assignee(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.drain_events()
    events = Recorder()
    monkeypatch.setattr(api.state.realtime, "emit", events.emit)
    inquiry_id = await submit(api)
    assigned = await patch(api, inquiry_id, {"assigneeId": "agent-3"})
    await patch(api, inquiry_id, {"priority": "LOW"})  # no new assignee: no inquiry.assigned
    await patch(api, inquiry_id, {"assigneeId": None})
    await api.drain_events()
    to_assignee = [(p, r) for n, p, r in events.calls if n == "inquiry.assigned"]
    assert to_assignee == [(assigned, ["user:agent-3"])]
    updates = events.of("inquiry.updated")
    assert [u["assigneeId"] for u in updates] == ["agent-3", "agent-3", None]
    assert [u["priority"] for u in updates] == ["NORMAL", "LOW", "LOW"]
