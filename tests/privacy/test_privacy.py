"""Personal data (API.md section 14) on PostgreSQL and SQLite: the subject export, the erase
(inquiries, comments, history notes, subscribers and their tokens) and what stays after it,
and consent as the admin JSON shows it."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
import structlog
from sqlalchemy import select, text

from outreach.subscribers.models import Subscriber
from tests.subscribers.helpers import assert_problem, record_events, token_of
from tests.support import BASE, RECEIVED_BODIES, Api

INQUIRIES = f"{BASE}/inquiries"
SUBSCRIBERS = f"{BASE}/subscribers"
SUBJECT = f"{BASE}/privacy/subject"
ERASE = f"{BASE}/privacy/erase"
UA = "Mozilla/5.0 (privacy test)"


def person() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"Trần Thị {tag}", f"Person-{tag}@Example.com"


async def submit(api: Api, name: str, email: str, message: str) -> str:
    body = {
        "name": name,
        "email": email,
        "phone": "+84 90 123 4567",
        "subject": f"about {message}",
        "message": message,
        "source": "https://shop.example/contact",
    }
    answer = await api.client.post(f"{INQUIRIES}/submit", json=body, headers={"User-Agent": UA})
    assert answer.status_code == 201, answer.text
    inquiry_id: str = answer.json()["id"]
    return inquiry_id


async def subscribe(api: Api, email: str, name: str | None = None) -> None:
    body = {"email": email, "name": name, "source": "footer"}
    answer = await api.client.post(
        f"{SUBSCRIBERS}/subscribe", json=body, headers={"User-Agent": UA}
    )
    assert answer.status_code in (200, 201, 202), answer.text


async def ok(api: Api, method: str, url: str, **kwargs: Any) -> Any:
    answer = await api.client.request(method, url, headers=api.owner, **kwargs)
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


async def subscriber_row(api: Api, subscriber_id: str) -> Subscriber:
    async with api.state.sessionmaker() as session:
        found = await session.get(Subscriber, int(subscriber_id))
        assert found is not None
        return found


async def statistics(api: Api) -> tuple[Any, Any]:
    inquiries = await ok(api, "GET", f"{BASE}/statistics/inquiries")
    subscribers = await ok(api, "GET", f"{BASE}/statistics/subscribers")
    return inquiries, subscribers


async def a_person_with_everything(api: Api) -> dict[str, Any]:
    """Two inquiries (one with a note, an assignee and a comment; one deleted) and a
    subscriber, all of one address; and an inquiry of someone else."""
    name, email = person()
    first = await submit(api, name, email, f"giao hàng {name}")
    second = await submit(api, name, email.lower(), "hoá đơn")
    await ok(
        api,
        "PATCH",
        f"{INQUIRIES}/{first}",
        json={
            "status": "IN_PROGRESS",
            "note": f"gọi lại {name} số 0901234567",
            "assigneeId": "emp-9",
        },
    )
    await ok(api, "POST", f"{INQUIRIES}/{first}/comments", json={"body": f"{email} đã trả lời"})
    await ok(api, "DELETE", f"{INQUIRIES}/{second}")
    await subscribe(api, email, name)
    (subscriber,) = (await ok(api, "GET", SUBSCRIBERS, params={"q": email.lower()}))["data"]
    other_name, other_email = person()
    other = await submit(api, other_name, other_email, "someone else")
    return {
        "name": name,
        "email": email.lower(),
        "typed": email,
        "inquiries": [first, second],
        "subscriber": subscriber["id"],
        "other": other,
    }


async def test_the_subject_export_holds_everything_about_an_address_and_no_token(
    api: Api,
) -> None:
    them = await a_person_with_everything(api)
    row = await subscriber_row(api, them["subscriber"])
    token = token_of(api, row)
    RECEIVED_BODIES.clear()

    export = await ok(api, "GET", SUBJECT, params={"email": them["email"].upper()})
    assert set(export) == {"email", "inquiries", "subscribers", "comments", "history"}
    assert export["email"] == them["email"]
    assert sorted(i["id"] for i in export["inquiries"]) == sorted(them["inquiries"])
    deleted = next(i for i in export["inquiries"] if i["id"] == them["inquiries"][1])
    assert deleted["deletedAt"] is not None  # deleted rows included
    live = next(i for i in export["inquiries"] if i["id"] == them["inquiries"][0])
    assert (live["name"], live["phone"], live["userAgent"]) == (them["name"], "+84 90 123 4567", UA)
    assert live["note"].startswith("gọi lại")
    (subscriber,) = export["subscribers"]
    assert subscriber["id"] == them["subscriber"]
    assert subscriber["consent"][0]["method"] == "single"
    assert [(c["inquiryId"], c["body"]) for c in export["comments"]] == [
        (them["inquiries"][0], f"{them['typed']} đã trả lời")
    ]
    actions = [(h["inquiryId"], h["action"]) for h in export["history"]]
    first, second = them["inquiries"]
    for expected in [(first, "created"), (first, "updated"), (first, "commented")]:
        assert expected in actions
    assert (second, "deleted") in actions
    assert all(i["email"] == them["email"] for i in export["inquiries"])
    assert them["other"] not in {i["id"] for i in export["inquiries"]}
    # Tokens are not stored, so none is exported: neither the value nor a field for it.
    assert token not in RECEIVED_BODIES[-1]
    assert "token" not in RECEIVED_BODIES[-1].lower()
    assert row.unsubscribe_selector not in RECEIVED_BODIES[-1]


async def test_an_address_held_nowhere_exports_empty_lists(api: Api) -> None:
    export = await ok(api, "GET", SUBJECT, params={"email": "nobody-here@example.com"})
    assert export == {
        "email": "nobody-here@example.com",
        "inquiries": [],
        "subscribers": [],
        "comments": [],
        "history": [],
    }


async def test_erase_removes_the_person_everywhere_and_keeps_the_counts(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    them = await a_person_with_everything(api)
    first, second = them["inquiries"]
    row = await subscriber_row(api, them["subscriber"])
    token = token_of(api, row)
    before = await statistics(api)
    params = {"q": them["name"], "includeDeleted": "true"}
    assert len((await ok(api, "GET", INQUIRIES, params=params))["data"]) == 2
    events = await record_events(api, monkeypatch)

    with structlog.testing.capture_logs() as logs:
        erased = await ok(api, "POST", ERASE, json={"email": them["email"]})
    assert erased == {"inquiries": 2, "subscribers": 1}

    # What the person wrote is gone from every answer.
    for inquiry_id in (first, second):
        got = await ok(api, "GET", f"{INQUIRIES}/{inquiry_id}", params={"includeDeleted": "true"})
        assert got["name"] == "[erased]"
        assert got["email"] == f"erased-{inquiry_id}@invalid"
        assert got["message"] == "[erased]"
        for field in ("phone", "subject", "source", "clientIp", "userAgent"):
            assert got[field] is None, field
        assert got["note"] in (None, "[erased]")
    kept = await ok(api, "GET", f"{INQUIRIES}/{first}")
    assert (kept["status"], kept["assigneeId"]) == ("IN_PROGRESS", "emp-9")  # triage state stays
    comments = await ok(api, "GET", f"{INQUIRIES}/{first}/comments")
    assert [c["body"] for c in comments["data"]] == ["[erased]"]
    history = (await ok(api, "GET", f"{INQUIRIES}/{first}/history", params={"limit": 100}))["data"]
    for entry in history:
        assert them["name"] not in orjson.dumps(entry).decode()
    note_change = next(h for h in history if "note" in h["changes"])
    assert note_change["changes"]["note"] == {"from": None, "to": "[erased]"}
    erased_entry = next(h for h in history if h["action"] == "erased")
    assert erased_entry["actorId"] == "owner-1"
    assert erased_entry["changes"] == {}

    # Search by anything of theirs finds nothing (the trigram index is on the rebuilt text).
    local = them["email"].split("@")[0]
    for q in (them["email"], local, them["name"], f"giao hàng {them['name']}"):
        found = await ok(
            api, "GET", INQUIRIES, params={"q": q, "includeDeleted": "true", "limit": 100}
        )
        assert found["data"] == [], q
        subs = await ok(api, "GET", SUBSCRIBERS, params={"q": q, "includeDeleted": "true"})
        assert subs["data"] == [], q
    export = await ok(api, "GET", SUBJECT, params={"email": them["email"]})
    assert export["inquiries"] == export["subscribers"] == export["comments"] == []

    subscriber = await ok(api, "GET", f"{SUBSCRIBERS}/{them['subscriber']}")
    assert subscriber["status"] == "UNSUBSCRIBED"
    assert subscriber["email"] == f"erased-{them['subscriber']}@invalid"
    assert (subscriber["name"], subscriber["source"], subscriber["consent"]) == (None, None, [])
    dead = await api.client.post(f"{SUBSCRIBERS}/unsubscribe", json={"token": token})
    assert_problem(dead, 404)

    # Counts and statistics stay; the subscriber moved from active to unsubscribed.
    inquiries_after, subscribers_after = await statistics(api)
    inquiries_before, subscribers_before = before
    assert inquiries_after["total"] == inquiries_before["total"]
    assert inquiries_after["byStatus"] == inquiries_before["byStatus"]
    assert subscribers_after["active"] == subscribers_before["active"] - 1
    assert subscribers_after["unsubscribed"] == subscribers_before["unsubscribed"] + 1
    other = await ok(api, "GET", f"{INQUIRIES}/{them['other']}")
    assert other["message"] == "someone else"  # nobody else's data is touched

    # Open portals are told; the log names who and how many, never the address.
    await api.drain_events()
    updated = {p["id"] for p in events.of("inquiry.updated")}
    assert {first, second} <= updated
    assert [p["id"] for p in events.of("subscriber.unsubscribed")] == [them["subscriber"]]
    (line,) = [entry for entry in logs if entry["event"] == "Personal data erased"]
    assert (line["erasedBy"], line["inquiries"], line["subscribers"]) == ("owner-1", 2, 1)
    assert them["email"] not in str(logs)
    assert local not in str(logs)

    # Irreversible and idempotent: nothing is left to erase.
    assert await ok(api, "POST", ERASE, json={"email": them["email"]}) == {
        "inquiries": 0,
        "subscribers": 0,
    }


async def test_erase_reaches_the_stored_search_text_and_notes(api: Api) -> None:
    """Below the API: the columns the search reads, and the history's JSON, hold nothing."""
    them = await a_person_with_everything(api)
    await ok(api, "POST", ERASE, json={"email": them["email"]})
    needle = them["name"].split()[-1]
    async with api.state.sessionmaker() as session:
        for table in ("inquiries", "subscribers", "inquiry_comments", "inquiry_history"):
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
            hits = [r for r in rows if needle in str(r) or them["email"] in str(r)]
            assert hits == [], table
        consent = await session.scalar(
            select(Subscriber.consent).where(Subscriber.id == int(them["subscriber"]))
        )
    assert consent == "[]"


async def test_privacy_routes_are_for_the_owner_and_validate(api: Api) -> None:
    for role in ("EMPLOYEE", "CASHIER"):
        headers = api.auth(role)
        got = await api.client.get(SUBJECT, params={"email": "a@example.com"}, headers=headers)
        assert_problem(got, 403)
        erase = await api.client.post(ERASE, json={"email": "a@example.com"}, headers=headers)
        assert_problem(erase, 403)
    assert_problem(await api.client.post(ERASE, json={"email": "a@example.com"}), 401)
    assert_problem(await api.client.get(SUBJECT, params={"email": "a@example.com"}), 401)
    for bad in ({"email": "not-an-address"}, {}, {"email": "a@example.com", "extra": 1}):
        answer = await api.client.post(ERASE, json=bad, headers=api.owner)
        assert_problem(answer, 422)
    assert_problem(await api.client.get(SUBJECT, headers=api.owner), 422)
    long = "a" * 250 + "@example.com"
    assert_problem(await api.client.get(SUBJECT, params={"email": long}, headers=api.owner), 422)


async def test_consent_is_kept_through_resubscribes_newest_first(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, email = person()
    email = email.lower()
    events = await record_events(api, monkeypatch)
    await subscribe(api, email)
    (row,) = (await ok(api, "GET", SUBSCRIBERS, params={"q": email}))["data"]
    (single,) = row["consent"]
    assert single["method"] == "single"
    assert (single["ip"], single["userAgent"], single["source"]) == ("203.0.113.7", UA, "footer")
    assert single["confirmedAt"] is None
    await api.drain_events()
    (subscribed,) = events.of("subscriber.subscribed")
    assert subscribed["consent"] == row["consent"]  # realtime carries it as the API shows it
    token = token_of(api, await subscriber_row(api, row["id"]))
    answer = await api.client.post(f"{SUBSCRIBERS}/unsubscribe", json={"token": token})
    assert answer.status_code == 200
    await subscribe(api, email)
    again = await ok(api, "GET", f"{SUBSCRIBERS}/{row['id']}")
    assert [c["method"] for c in again["consent"]] == ["single", "single"]
    assert again["consent"][0]["at"] > again["consent"][1]["at"]  # newest first
    assert again["consent"][1] == single

    # A staff-made subscriber: method staff, no client of the subscriber's own.
    _, staff_email = person()
    made = await ok(api, "POST", SUBSCRIBERS, json={"email": staff_email, "source": "shop"})
    (staff,) = made["consent"]
    assert (staff["method"], staff["ip"], staff["userAgent"]) == ("staff", None, None)
    assert staff["source"] == "shop"
