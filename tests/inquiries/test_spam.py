"""Spam on inquiries (API.md section 10): the reason on every spam inquiry, a blocked sender who
cannot tell, staff marks through PATCH and bulk-status, `block`, and the `spam` filter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey
from prometheus_client import REGISTRY

from outreach.inquiries.models import Inquiry
from tests.support import BASE, Api, Recorder, make_settings, start_api

SUBMIT = f"{BASE}/inquiries/submit"
INQUIRIES = f"{BASE}/inquiries"
BLOCKLIST = f"{BASE}/blocklist"


def domain() -> str:
    return f"s{uuid.uuid4().hex[:10]}.example"


def form(email: str, **extra: Any) -> dict[str, Any]:
    return {"name": "Spammer", "email": email, "message": "cheap watches", **extra}


async def recorder(api: Api, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    await api.drain_events()
    rec = Recorder()
    monkeypatch.setattr(api.state.realtime, "emit", rec.emit)
    return rec


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def get(api: Api, inquiry_id: str) -> dict[str, Any]:
    answer = await api.client.get(f"{INQUIRIES}/{inquiry_id}", headers=api.owner)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture
async def entries(api: Api) -> AsyncIterator[list[str]]:
    made: list[str] = []
    yield made
    listed = await api.client.get(BLOCKLIST, params={"limit": 100}, headers=api.owner)
    for item in listed.json()["data"]:
        if item["id"] in made or item["reason"] == "bulk-status spam":
            await api.client.delete(f"{BLOCKLIST}/{item['id']}", headers=api.owner)


async def test_honeypot_and_blocklist_are_stored_with_their_reason_and_told_nothing(
    api: Api, entries: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked_domain = domain()
    made = await api.client.post(
        BLOCKLIST, json={"kind": "domain", "value": blocked_domain}, headers=api.owner
    )
    entries.append(made.json()["id"])
    events = await recorder(api, monkeypatch)
    before = {
        "sent": metric("outreach_inquiries_submitted_total"),
        "honeypot": metric("outreach_inquiries_blocked_total", reason="honeypot"),
        "blocklist": metric("outreach_inquiries_blocked_total", reason="blocklist"),
    }
    real = await api.client.post(SUBMIT, json=form(f"real@{domain()}"))
    honeypot = await api.client.post(SUBMIT, json=form(f"hp@{domain()}", website="x"))
    listed = await api.client.post(SUBMIT, json=form(f"BOT@{blocked_domain.upper()}"))
    for answer in (real, honeypot, listed):
        assert answer.status_code == 201
        assert set(answer.json()) == {"id", "status", "createdAt"}
        assert answer.json()["status"] == "SENT"  # the same answer for all three
    await api.drain_events()

    assert (await get(api, real.json()["id"]))["spamReason"] is None
    for answer, reason in ((honeypot, "honeypot"), (listed, "blocklist")):
        stored = await get(api, answer.json()["id"])
        assert (stored["status"], stored["spamReason"]) == ("CANCELLED", reason)
    assert [p["id"] for p in events.of("inquiry.sent")] == [real.json()["id"]]
    assert metric("outreach_inquiries_submitted_total") == before["sent"] + 1
    for reason in ("honeypot", "blocklist"):
        after = metric("outreach_inquiries_blocked_total", reason=reason)
        assert after == before[reason] + 1


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
async def test_a_blocked_client_address_ipv6_block(
    database: str, pg_database: str, sqlite_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    network = f"2001:db8:{uuid.uuid4().int % 65536:x}::/48"
    client = network.replace("::/48", ":7::5")
    url = pg_database if database == "postgresql" else sqlite_database
    async with start_api(make_settings(url, var_dir), dev_key, client=client) as api:
        made = await api.client.post(
            BLOCKLIST, json={"kind": "ip", "value": network}, headers=api.owner
        )
        assert made.status_code == 201, made.text
        try:
            answer = await api.client.post(SUBMIT, json=form(f"x@{domain()}"))
            stored = await get(api, answer.json()["id"])
            assert stored["clientIp"] == client
            assert stored["spamReason"] == "blocklist"
        finally:
            await api.client.delete(f"{BLOCKLIST}/{made.json()['id']}", headers=api.owner)


async def submitted(api: Api, **extra: Any) -> str:
    answer = await api.client.post(SUBMIT, json=form(f"t@{domain()}", **extra))
    assert answer.status_code == 201
    inquiry_id: str = answer.json()["id"]
    return inquiry_id


async def patch(api: Api, inquiry_id: str, body: dict[str, Any]) -> Any:
    return await api.client.patch(f"{INQUIRIES}/{inquiry_id}", json=body, headers=api.owner)


async def test_patch_spam_rules(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    spam = {"status": "CANCELLED", "spam": True}
    events = await recorder(api, monkeypatch)

    fresh = await submitted(api)
    marked = await patch(api, fresh, spam)
    assert (marked.json()["status"], marked.json()["spamReason"]) == ("CANCELLED", "staff")

    cancelled = await submitted(api)
    await patch(api, cancelled, {"status": "CANCELLED"})
    before = await get(api, cancelled)
    assert before["spamReason"] is None
    after = (await patch(api, cancelled, spam)).json()  # a change, not the same-status no-op
    assert after["spamReason"] == "staff"
    assert after["updatedAt"] >= before["updatedAt"]

    honeypot = await submitted(api, website="x")
    kept = await get(api, honeypot)
    again = (await patch(api, honeypot, spam)).json()
    assert again == kept  # already spam: a no-op, the reason kept
    await api.drain_events()
    changed = [p["id"] for p in events.of("inquiry.updated")]
    assert fresh in changed
    assert cancelled in changed
    assert honeypot not in changed

    back = (await patch(api, honeypot, {"status": "SENT"})).json()
    assert (back["status"], back["spamReason"]) == ("SENT", None)  # leaving CANCELLED clears it

    for wrong in (
        {"status": "IN_PROGRESS", "spam": True},
        {"spam": True},
        {"status": "CANCELLED", "spam": False},
    ):
        refused = await patch(api, fresh, wrong)
        assert refused.status_code == 422, (wrong, refused.text)


async def test_the_spam_filter(api: Api) -> None:
    tag = uuid.uuid4().hex[:10]
    ham = await api.client.post(SUBMIT, json=form(f"{tag}-ham@{domain()}"))
    pot = await api.client.post(SUBMIT, json=form(f"{tag}-pot@{domain()}", website="x"))
    only_spam = await api.client.get(
        INQUIRIES, params={"q": tag, "spam": "true"}, headers=api.owner
    )
    no_spam = await api.client.get(INQUIRIES, params={"q": tag, "spam": "false"}, headers=api.owner)
    assert [i["id"] for i in only_spam.json()["data"]] == [pot.json()["id"]]
    assert [i["id"] for i in no_spam.json()["data"]] == [ham.json()["id"]]
    assert only_spam.json()["meta"]["total"] == 1
    # Without `q` the total comes from the trigger-kept counters on PostgreSQL, which know
    # no spam: the filter must not take that path.
    everything = await api.client.get(
        INQUIRIES, params={"spam": "true", "limit": 1}, headers=api.owner
    )
    async with api.state.sessionmaker() as session:
        from sqlalchemy import func, select

        expected = await session.scalar(
            select(func.count())
            .select_from(Inquiry)
            .where(Inquiry.spam_reason.is_not(None), Inquiry.deleted_at.is_(None))
        )
    assert everything.json()["meta"]["total"] == expected


@pytest.mark.usefixtures("entries")
async def test_bulk_status_marks_a_flood_and_blocks_it(api: Api) -> None:
    flood = domain()
    ids = [await submitted_from(api, f"bot{n}@mail.{flood}") for n in range(3)]
    ids.append(await submitted_from(api, f"bot9@{flood}", website="x"))  # a honeypot hit
    resolved = await submitted_from(api, f"late@{flood}")
    await patch(api, resolved, {"status": "RESOLVED"})
    body = {
        "ids": [*ids, resolved, "123"],
        "status": "CANCELLED",
        "spam": True,
        "block": ["email", "domain"],
    }
    answer = await api.client.post(f"{INQUIRIES}/bulk-status", json=body, headers=api.owner)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["updated"] == ids[:3]
    assert {s["id"]: s["reason"] for s in result["skipped"]} == {
        ids[3]: "unchanged",  # spam already (honeypot): skipped, but blocked too
        resolved: "invalid-transition",
        "123": "not-found",
    }
    blocked = {(e["kind"], e["value"]) for e in result["blocked"]}
    assert blocked == {
        *(("email", f"bot{n}@mail.{flood}") for n in range(3)),
        ("email", f"bot9@{flood}"),
        ("domain", f"mail.{flood}"),
        ("domain", flood),
    }
    for item in result["blocked"]:
        assert item["createdBy"] == "owner-1"
    for inquiry_id in ids[:3]:
        assert (await get(api, inquiry_id))["spamReason"] == "staff"

    # The flood's next message is stored as blocked; blocking again adds nothing new.
    nxt = await submitted_from(api, f"new@{flood}")
    assert (await get(api, nxt))["spamReason"] == "blocklist"
    again = await api.client.post(f"{INQUIRIES}/bulk-status", json=body, headers=api.owner)
    assert again.json()["blocked"] == []

    plain = await api.client.post(
        f"{INQUIRIES}/bulk-status", json={"ids": [nxt], "status": "CANCELLED"}, headers=api.owner
    )
    assert "blocked" not in plain.json()  # section 5's shape without `block`
    wrong = await api.client.post(
        f"{INQUIRIES}/bulk-status",
        json={"ids": [nxt], "status": "CANCELLED", "block": ["ip"]},
        headers=api.owner,
    )
    assert wrong.status_code == 422


async def submitted_from(api: Api, email: str, **extra: Any) -> str:
    answer = await api.client.post(SUBMIT, json=form(email, **extra))
    assert answer.status_code == 201
    inquiry_id: str = answer.json()["id"]
    return inquiry_id
