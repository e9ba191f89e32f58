"""Admin subscriber routes: CRUD, list filters and pages, soft delete/restore, roles, CSV export."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import structlog
from sqlalchemy import select

from outreach.subscribers.models import Subscriber
from tests.subscribers.helpers import (
    OUT_FIELDS,
    READER_ROOMS,
    SUBSCRIBE,
    SUBSCRIBERS,
    TIME,
    UNSUBSCRIBE,
    assert_problem,
    fields,
    record_events,
    token_of,
)
from tests.support import Api, unique_email

EXPORT = f"{SUBSCRIBERS}/export"
CSV_HEADER = [
    "id",
    "email",
    "name",
    "status",
    "source",
    "subscribedAt",
    "unsubscribedAt",
    "unsubscribeUrl",
]
UNSUBSCRIBE_URL = "https://shop.example/v1/api/outreach/subscribers/unsubscribe?token="


# ---- helpers ------------------------------------------------------------------------------


async def stored(api: Api, subscriber_id: str) -> Subscriber:
    async with api.state.sessionmaker() as session:
        row: Subscriber = (
            await session.scalars(select(Subscriber).where(Subscriber.id == int(subscriber_id)))
        ).one()
        return row


async def create(api: Api, email: str | None = None, **extra: Any) -> dict[str, Any]:
    response = await api.client.post(
        SUBSCRIBERS, json={"email": email or unique_email("admin"), **extra}, headers=api.owner
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def listing(api: Api, headers: dict[str, str] | None = None, **params: Any) -> Any:
    response = await api.client.get(SUBSCRIBERS, params=params, headers=headers or api.owner)
    assert response.status_code == 200, response.text
    return response.json()


async def patch(
    api: Api, subscriber_id: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    """PATCH one subscriber (as the owner unless told otherwise); the answer is not checked."""
    return await api.client.patch(
        f"{SUBSCRIBERS}/{subscriber_id}", json=body, headers=headers or api.owner
    )


def ids(page: Any) -> list[str]:
    return [item["id"] for item in page["data"]]


def parse_csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.reader(io.StringIO(response.content.decode("utf-8"), newline=""))
    header = next(reader)
    assert header == CSV_HEADER
    return [dict(zip(header, row, strict=True)) for row in reader]


# ---- create and get -----------------------------------------------------------------------


async def test_create_answers_201_with_an_active_subscriber(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = await record_events(api, monkeypatch)
    email = unique_email("Create")
    response = await api.client.post(
        SUBSCRIBERS,
        json={"email": f" {email.upper()} ", "name": " Trần Thị Ánh ", "source": "shop counter"},
        headers=api.auth("CASHIER", sub="cashier-1"),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == OUT_FIELDS
    assert re.fullmatch(r"[0-9]{1,19}", body["id"])
    assert body["email"] == email.lower()
    assert body["name"] == "Trần Thị Ánh"
    assert body["source"] == "shop counter"
    assert body["status"] == "ACTIVE"
    assert body["unsubscribedAt"] is None
    assert body["deletedAt"] is None
    for key in ("subscribedAt", "createdAt", "updatedAt"):
        assert TIME.fullmatch(body[key]), body[key]
    row = await stored(api, body["id"])
    assert (row.email, row.status, row.deleted_at) == (email.lower(), "ACTIVE", None)
    assert len(row.unsubscribe_selector) >= 22  # 128 random bits; no token is stored

    got = await api.client.get(f"{SUBSCRIBERS}/{body['id']}", headers=api.owner)
    assert got.status_code == 200
    assert got.json() == body

    await api.drain_events()
    sent = events.about_id(body["id"])
    assert [(name, rooms) for name, _, rooms in sent] == [("subscriber.subscribed", READER_ROOMS)]
    assert sent[0][1] == body


async def test_create_with_a_taken_email_is_409(pg_api: Api) -> None:
    email = unique_email("taken")
    await create(pg_api, email)
    for given in (email, email.upper()):
        response = await pg_api.client.post(
            SUBSCRIBERS, json={"email": given}, headers=pg_api.owner
        )
        assert_problem(response, 409, "email-taken")
    # Taken through the public form too.
    public = unique_email("public")
    assert (await pg_api.client.post(SUBSCRIBE, json={"email": public})).status_code == 202
    response = await pg_api.client.post(SUBSCRIBERS, json={"email": public}, headers=pg_api.owner)
    assert_problem(response, 409, "email-taken")


async def test_create_reuses_the_email_of_a_deleted_subscriber(pg_api: Api) -> None:
    email = unique_email("reuse")
    first = await create(pg_api, email)
    deleted = await pg_api.client.delete(f"{SUBSCRIBERS}/{first['id']}", headers=pg_api.owner)
    assert deleted.status_code == 204
    second = await create(pg_api, email)
    assert second["id"] != first["id"]
    assert second["status"] == "ACTIVE"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"name": "n" * 121}, "name"),
        ({"source": "s" * 2049}, "source"),
        ({"status": "ACTIVE"}, "status"),
        ({"unsubscribeToken": "mine"}, "unsubscribeToken"),
    ],
)
async def test_create_validation_is_422(pg_api: Api, body: dict[str, Any], field: str) -> None:
    email = unique_email("badcreate")
    response = await pg_api.client.post(
        SUBSCRIBERS, json={"email": email, **body}, headers=pg_api.owner
    )
    assert_problem(response, 422, "validation-failed")
    assert field in fields(response)
    assert (await listing(pg_api, q=email))["meta"]["total"] == 0


async def test_create_needs_an_email(pg_api: Api) -> None:
    response = await pg_api.client.post(SUBSCRIBERS, json={"name": "x"}, headers=pg_api.owner)
    assert_problem(response, 422)
    assert fields(response) == ["email"]


async def test_create_malformed_json_and_wrong_type(pg_api: Api) -> None:
    malformed = await pg_api.client.post(
        SUBSCRIBERS,
        content=b'{"email": "a@',
        headers={**pg_api.owner, "Content-Type": "application/json"},
    )
    assert_problem(malformed, 400, "malformed-request")
    form = await pg_api.client.post(
        SUBSCRIBERS, data={"email": unique_email()}, headers=pg_api.owner
    )
    assert_problem(form, 415, "unsupported-media-type")


@pytest.mark.parametrize("raw_id", ["1", "abc", "-5", "99999999999999999999", "1e3", "0"])
async def test_get_unknown_or_non_numeric_id_is_404(pg_api: Api, raw_id: str) -> None:
    response = await pg_api.client.get(f"{SUBSCRIBERS}/{raw_id}", headers=pg_api.owner)
    assert_problem(response, 404, "not-found")


# ---- list ---------------------------------------------------------------------------------


async def test_list_items_are_what_get_shows(api: Api) -> None:
    """A list page (built without pydantic) shows each row as GET /subscribers/{id} does."""
    marker = uuid.uuid4().hex[:10]
    kept = await create(api, unique_email(f"li{marker}"), name="Lan", source="footer")
    left = await create(api, unique_email(f"li{marker}"))
    gone = await create(api, unique_email(f"li{marker}"), name="Gone")
    assert (await patch(api, left["id"], {"status": "UNSUBSCRIBED"})).status_code == 200
    deleted = await api.client.delete(f"{SUBSCRIBERS}/{gone['id']}", headers=api.owner)
    assert deleted.status_code == 204
    page = await listing(api, q=f"li{marker}", includeDeleted="true")
    assert [item["id"] for item in page["data"]] == [gone["id"], left["id"], kept["id"]]
    for item in page["data"]:
        one = await api.client.get(
            f"{SUBSCRIBERS}/{item['id']}", params={"includeDeleted": "true"}, headers=api.owner
        )
        assert item == one.json()
    assert page["data"][0]["deletedAt"] is not None
    assert page["data"][1]["unsubscribedAt"] is not None
    assert page["meta"] == {"limit": 20, "nextCursor": None, "total": 3}


async def test_list_pages_through_every_row_once(api: Api) -> None:
    marker = uuid.uuid4().hex
    created = [(await create(api, unique_email(marker)))["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"q": marker, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await listing(api, **params)
        pages += 1
        assert page["meta"]["total"] == 5
        assert page["meta"]["limit"] == 2
        assert len(page["data"]) <= 2
        seen += ids(page)
        cursor = page["meta"]["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(created))  # newest first, each once
    asc_seen: list[str] = []
    cursor = None
    while True:
        params = {"q": marker, "limit": 3, "order": "asc"}
        if cursor:
            params["cursor"] = cursor
        page = await listing(api, **params)
        asc_seen += ids(page)
        cursor = page["meta"]["nextCursor"]
        if cursor is None:
            break
    assert asc_seen == created
    default = await listing(api, q=marker)
    assert default["meta"] == {"limit": 20, "nextCursor": None, "total": 5}
    assert all(set(item) == OUT_FIELDS for item in default["data"])


async def test_q_finds_vietnamese_names_case_insensitively(api: Api) -> None:
    marker = uuid.uuid4().hex[:10]
    target = await create(api, name=f"Trần Thị Ánh {marker}")
    other = await create(api, name=f"Trần Thị Anh {marker}")
    for q in (
        f"ánh {marker}",
        f"ÁNH {marker}",
        f"Ánh {marker}",
        unicodedata.normalize("NFD", f"ánh {marker}"),
    ):
        page = await listing(api, q=q)
        assert ids(page) == [target["id"]], q
    assert ids(await listing(api, q=f"THỊ ÁNH {marker}")) == [target["id"]]
    both = await listing(api, q=marker.upper())
    assert sorted(ids(both)) == sorted([target["id"], other["id"]])


async def test_q_matches_email_and_escapes_wildcards(pg_api: Api) -> None:
    marker = uuid.uuid4().hex[:10]
    email = unique_email(f"mail_{marker}")
    found = await create(pg_api, email)
    await create(pg_api, unique_email(f"mailx{marker}"))
    page = await listing(pg_api, q=email.split("@")[0].upper())
    assert ids(page) == [found["id"]]
    assert (await listing(pg_api, q=f"mail_{marker}"))["meta"]["total"] == 1
    assert (await listing(pg_api, q=f"%{marker}"))["meta"]["total"] == 0


async def test_status_and_date_filters(api: Api) -> None:
    marker = uuid.uuid4().hex
    active = await create(api, unique_email(marker))
    leaving = await create(api, unique_email(marker))
    patched = await patch(api, leaving["id"], {"status": "UNSUBSCRIBED"})
    assert patched.status_code == 200, patched.text
    assert ids(await listing(api, q=marker, status="UNSUBSCRIBED")) == [leaving["id"]]
    assert ids(await listing(api, q=marker, status="ACTIVE")) == [active["id"]]
    both = await api.client.get(
        SUBSCRIBERS,
        params=[("q", marker), ("status", "ACTIVE"), ("status", "UNSUBSCRIBED")],
        headers=api.owner,
    )
    assert both.json()["meta"]["total"] == 2
    assert (await listing(api, q=marker, createdFrom="2999-01-01"))["data"] == []
    assert (await listing(api, q=marker, createdTo="2000-01-01"))["data"] == []
    window = await listing(
        api, q=marker, createdFrom="2000-01-01T00:00:00Z", createdTo="2999-12-31"
    )
    assert window["meta"]["total"] == 2
    exact = await listing(api, q=marker, createdFrom=leaving["createdAt"])
    assert leaving["id"] in ids(exact)
    before = await listing(api, q=marker, createdTo=active["createdAt"])
    assert active["id"] in ids(before)  # the bound is inclusive
    if leaving["createdAt"] > active["createdAt"]:
        assert leaving["id"] not in ids(before)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "GONE"}, "status"),
        ({"order": "sideways"}, "order"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "eDEyMw"}, "cursor"),  # "x123": not an order we make
        ({"cursor": "ZC0x"}, "cursor"),  # "d-1"
        ({"createdFrom": "yesterday"}, "createdFrom"),
        ({"createdTo": "2026-13-40"}, "createdTo"),
        ({"includeDeleted": "perhaps"}, "includeDeleted"),
    ],
)
async def test_bad_list_query_is_422_naming_the_parameter(
    pg_api: Api, params: dict[str, str], field: str
) -> None:
    response = await pg_api.client.get(SUBSCRIBERS, params=params, headers=pg_api.owner)
    assert_problem(response, 422, "validation-failed")
    assert field in fields(response)


async def test_a_cursor_is_only_good_for_its_order(pg_api: Api) -> None:
    marker = uuid.uuid4().hex
    for _ in range(3):
        await create(pg_api, unique_email(marker))
    cursor = (await listing(pg_api, q=marker, limit=1))["meta"]["nextCursor"]
    assert cursor
    response = await pg_api.client.get(
        SUBSCRIBERS, params={"q": marker, "order": "asc", "cursor": cursor}, headers=pg_api.owner
    )
    assert_problem(response, 422)
    assert fields(response) == ["cursor"]


async def test_limit_bounds_1_and_100_are_fine(pg_api: Api) -> None:
    for limit in (1, 100):
        assert (await listing(pg_api, limit=limit))["meta"]["limit"] == limit


# ---- update -------------------------------------------------------------------------------


async def test_patch_name_changes_it_and_the_search(api: Api) -> None:
    marker = uuid.uuid4().hex[:10]
    sub = await create(api, name=f"Old {marker}")
    response = await patch(
        api, sub["id"], {"name": f"  Lê Văn Mới {marker} "}, api.auth("EMPLOYEE", sub="emp-1")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == f"Lê Văn Mới {marker}"
    assert body["status"] == "ACTIVE"
    assert body["email"] == sub["email"]
    assert body["subscribedAt"] == sub["subscribedAt"]
    assert (await stored(api, sub["id"])).name == f"Lê Văn Mới {marker}"
    assert ids(await listing(api, q=f"MỚI {marker}")) == [sub["id"]]
    assert (await listing(api, q=f"old {marker}"))["meta"]["total"] == 0

    for empty in (None, "   "):
        restored = await patch(api, sub["id"], {"name": "Tạm"})
        assert restored.json()["name"] == "Tạm"
        cleared = await patch(api, sub["id"], {"name": empty})
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["name"] is None
        assert (await stored(api, sub["id"])).name is None


async def test_patch_status_round_trip_rotates_the_token(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = await create(api)
    first_token = token_of(api, await stored(api, sub["id"]))
    events = await record_events(api, monkeypatch)

    out = await patch(api, sub["id"], {"status": "UNSUBSCRIBED"})
    assert out.status_code == 200, out.text
    left = out.json()
    assert left["status"] == "UNSUBSCRIBED"
    assert TIME.fullmatch(left["unsubscribedAt"])
    row = await stored(api, sub["id"])
    assert (row.status, token_of(api, row)) == ("UNSUBSCRIBED", first_token)

    back = await patch(api, sub["id"], {"status": "ACTIVE"})
    assert back.status_code == 200
    assert back.json()["status"] == "ACTIVE"
    assert back.json()["unsubscribedAt"] is None
    assert back.json()["subscribedAt"] >= left["unsubscribedAt"]
    row = await stored(api, sub["id"])
    assert row.status == "ACTIVE"
    assert token_of(api, row) != first_token
    stale = await api.client.post(UNSUBSCRIBE, json={"token": first_token})
    assert_problem(stale, 404, "not-found")
    assert (await stored(api, sub["id"])).status == "ACTIVE"

    await api.drain_events()
    sent = events.about_id(sub["id"])
    assert [(name, rooms) for name, _, rooms in sent] == [
        ("subscriber.unsubscribed", READER_ROOMS),
        ("subscriber.subscribed", READER_ROOMS),
    ]
    assert sent[0][1] == left
    assert sent[1][1] == back.json()

    fresh = await api.client.post(UNSUBSCRIBE, params={"token": token_of(api, row)})
    assert fresh.status_code == 200
    assert (await stored(api, sub["id"])).status == "UNSUBSCRIBED"


async def test_patch_to_the_same_status_is_a_no_op(
    pg_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = await create(pg_api)
    token = token_of(pg_api, await stored(pg_api, sub["id"]))
    events = await record_events(pg_api, monkeypatch)
    response = await patch(pg_api, sub["id"], {"status": "ACTIVE"})
    assert response.status_code == 200
    assert response.json() == sub
    await pg_api.drain_events()
    assert events.about_id(sub["id"]) == []
    assert token_of(pg_api, await stored(pg_api, sub["id"])) == token


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "GONE"}, "status"),
        ({"name": "n" * 121}, "name"),
        ({"name": "nul\x00"}, "name"),
        ({"name": 7}, "name"),
        ({"email": "new@example.com"}, "email"),
        ({"deletedAt": None}, "deletedAt"),
    ],
)
async def test_patch_validation_is_422(pg_api: Api, body: dict[str, Any], field: str) -> None:
    sub = await create(pg_api)
    response = await patch(pg_api, sub["id"], body)
    assert_problem(response, 422, "validation-failed")
    assert field in fields(response)
    again = await pg_api.client.get(f"{SUBSCRIBERS}/{sub['id']}", headers=pg_api.owner)
    assert again.json() == sub


@pytest.mark.parametrize("body", [{}, {"status": None}])
async def test_patch_with_nothing_to_change_is_422(pg_api: Api, body: dict[str, Any]) -> None:
    sub = await create(pg_api)
    response = await patch(pg_api, sub["id"], body)
    assert_problem(response, 422, "validation-failed")
    assert (await stored(pg_api, sub["id"])).status == "ACTIVE"


async def test_patch_unknown_is_404_and_bad_body_415(pg_api: Api) -> None:
    missing = await patch(pg_api, "1", {"name": "x"})
    assert_problem(missing, 404, "not-found")
    sub = await create(pg_api)
    wrong = await pg_api.client.patch(
        f"{SUBSCRIBERS}/{sub['id']}",
        content=b"name=x",
        headers={**pg_api.owner, "Content-Type": "text/plain"},
    )
    assert_problem(wrong, 415, "unsupported-media-type")


# ---- delete and restore -------------------------------------------------------------------


async def test_delete_hides_and_restore_brings_back(api: Api) -> None:
    marker = uuid.uuid4().hex
    sub = await create(api, unique_email(marker))
    url = f"{SUBSCRIBERS}/{sub['id']}"
    deleted = await api.client.delete(url, headers=api.owner)
    assert deleted.status_code == 204
    assert deleted.content == b""
    row = await stored(api, sub["id"])
    assert row.deleted_at is not None  # soft: the row is still there

    assert_problem(await api.client.get(url, headers=api.owner), 404, "not-found")
    assert_problem(
        await api.client.patch(url, json={"name": "x"}, headers=api.owner), 404, "not-found"
    )
    assert_problem(await api.client.delete(url, headers=api.owner), 404, "not-found")
    assert (await listing(api, q=marker))["meta"]["total"] == 0

    hidden = await listing(api, q=marker, includeDeleted="true")
    assert ids(hidden) == [sub["id"]]
    assert TIME.fullmatch(hidden["data"][0]["deletedAt"])
    one = await api.client.get(url, params={"includeDeleted": "true"}, headers=api.owner)
    assert one.status_code == 200
    assert one.json()["deletedAt"] == hidden["data"][0]["deletedAt"]

    restored = await api.client.post(f"{url}/restore", headers=api.owner)
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert body["id"] == sub["id"]
    assert body["deletedAt"] is None
    assert body["status"] == "ACTIVE"
    assert (await api.client.get(url, headers=api.owner)).json() == body
    assert ids(await listing(api, q=marker)) == [sub["id"]]

    again = await api.client.post(f"{url}/restore", headers=api.owner)
    assert again.status_code == 200
    assert again.json() == body  # a no-op: updatedAt stays


async def test_restore_unknown_is_404(pg_api: Api) -> None:
    for raw_id in ("1", "abc"):
        response = await pg_api.client.post(f"{SUBSCRIBERS}/{raw_id}/restore", headers=pg_api.owner)
        assert_problem(response, 404, "not-found")


async def test_restore_is_409_when_a_live_subscriber_took_the_email(pg_api: Api) -> None:
    email = unique_email("clash")
    old = await create(pg_api, email)
    url = f"{SUBSCRIBERS}/{old['id']}"
    assert (await pg_api.client.delete(url, headers=pg_api.owner)).status_code == 204
    assert (await pg_api.client.post(SUBSCRIBE, json={"email": email.upper()})).status_code == 202
    response = await pg_api.client.post(f"{url}/restore", headers=pg_api.owner)
    assert_problem(response, 409, "email-taken")
    assert (await stored(pg_api, old["id"])).deleted_at is not None
    assert (await listing(pg_api, q=email))["meta"]["total"] == 1


# ---- roles --------------------------------------------------------------------------------


async def test_cashier_may_read_and_create_only(pg_api: Api) -> None:
    cashier = pg_api.auth("CASHIER", sub="cashier-2")
    sub = await create(pg_api)
    url = f"{SUBSCRIBERS}/{sub['id']}"
    assert (await pg_api.client.get(SUBSCRIBERS, headers=cashier)).status_code == 200
    assert (await pg_api.client.get(url, headers=cashier)).status_code == 200
    made = await pg_api.client.post(SUBSCRIBERS, json={"email": unique_email()}, headers=cashier)
    assert made.status_code == 201
    denied = [
        await pg_api.client.patch(url, json={"status": "UNSUBSCRIBED"}, headers=cashier),
        await pg_api.client.delete(url, headers=cashier),
        await pg_api.client.post(f"{url}/restore", headers=cashier),
        await pg_api.client.get(EXPORT, headers=cashier),
        await pg_api.client.get(SUBSCRIBERS, params={"includeDeleted": "true"}, headers=cashier),
        await pg_api.client.get(url, params={"includeDeleted": "true"}, headers=cashier),
    ]
    for response in denied:
        assert_problem(response, 403, "forbidden")
    row = await stored(pg_api, sub["id"])
    assert (row.status, row.deleted_at) == ("ACTIVE", None)


async def test_employee_may_update_but_not_delete_restore_or_export(pg_api: Api) -> None:
    employee = pg_api.auth("EMPLOYEE", sub="emp-2")
    sub = await create(pg_api)
    url = f"{SUBSCRIBERS}/{sub['id']}"
    patched = await pg_api.client.patch(url, json={"name": "Bình"}, headers=employee)
    assert patched.status_code == 200
    assert (
        await pg_api.client.post(SUBSCRIBERS, json={"email": unique_email()}, headers=employee)
    ).status_code == 201
    for response in (
        await pg_api.client.delete(url, headers=employee),
        await pg_api.client.post(f"{url}/restore", headers=employee),
        await pg_api.client.get(EXPORT, headers=employee),
        await pg_api.client.get(SUBSCRIBERS, params={"includeDeleted": "true"}, headers=employee),
    ):
        assert_problem(response, 403, "forbidden")
    assert (await stored(pg_api, sub["id"])).deleted_at is None


async def test_a_role_with_no_rights_is_403(pg_api: Api) -> None:
    nobody = {"Authorization": f"Bearer {pg_api.token('GUEST', sub='guest')}"}
    sub = await create(pg_api)
    for response in (
        await pg_api.client.get(SUBSCRIBERS, headers=nobody),
        await pg_api.client.get(f"{SUBSCRIBERS}/{sub['id']}", headers=nobody),
        await pg_api.client.post(SUBSCRIBERS, json={"email": unique_email()}, headers=nobody),
    ):
        assert_problem(response, 403, "forbidden")


async def test_no_or_bad_token_is_401(pg_api: Api) -> None:
    sub = await create(pg_api)
    url = f"{SUBSCRIBERS}/{sub['id']}"
    calls = [
        ("GET", SUBSCRIBERS, None),
        ("POST", SUBSCRIBERS, {"email": unique_email()}),
        ("GET", url, None),
        ("PATCH", url, {"name": "x"}),
        ("DELETE", url, None),
        ("POST", f"{url}/restore", None),
        ("GET", EXPORT, None),
    ]
    for method, path, body in calls:
        anonymous = await pg_api.client.request(method, path, json=body)
        assert_problem(anonymous, 401, "unauthorized")
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        forged = await pg_api.client.request(
            method, path, json=body, headers={"Authorization": "Bearer not.a.jwt"}
        )
        assert_problem(forged, 401, "unauthorized")
        assert forged.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    row = await stored(pg_api, sub["id"])
    assert (row.name, row.deleted_at) == (None, None)


# ---- export -------------------------------------------------------------------------------


async def test_export_is_a_csv_of_live_matching_rows_with_working_links(api: Api) -> None:
    marker = uuid.uuid4().hex
    plain = await create(api, unique_email(marker), name="Nguyễn Văn A", source="footer")
    bare = await create(api, unique_email(marker))
    gone = await create(api, unique_email(marker))
    assert (
        await api.client.delete(f"{SUBSCRIBERS}/{gone['id']}", headers=api.owner)
    ).status_code == 204
    await create(api, unique_email("unrelated"))

    with structlog.testing.capture_logs() as logs:
        response = await api.client.get(
            EXPORT, params={"q": marker, "order": "asc"}, headers=api.owner
        )
    rows = parse_csv(response)
    assert [r["id"] for r in rows] == [plain["id"], bare["id"]]
    first, second = rows
    assert first["email"] == plain["email"]
    assert first["name"] == "Nguyễn Văn A"
    assert first["status"] == "ACTIVE"
    assert first["source"] == "footer"
    assert first["subscribedAt"] == plain["subscribedAt"]
    assert first["unsubscribedAt"] == ""
    assert (second["name"], second["source"]) == ("", "")
    for row, sub in ((first, plain), (second, bare)):
        token = token_of(api, await stored(api, sub["id"]))
        assert row["unsubscribeUrl"] == UNSUBSCRIBE_URL + token
    lines = [e for e in logs if e.get("rows") == 2]
    assert lines
    assert lines[0]["exportedBy"] == "owner-1"
    for sub in (plain, bare):
        assert token_of(api, await stored(api, sub["id"])) not in repr(logs)

    desc = parse_csv(await api.client.get(EXPORT, params={"q": marker}, headers=api.owner))
    assert [r["id"] for r in desc] == [bare["id"], plain["id"]]

    # The link works as is: the mailing tool posts to it (RFC 8058).
    link = urlsplit(first["unsubscribeUrl"])
    assert f"{link.scheme}://{link.netloc}" == "https://shop.example"
    clicked = await api.client.post(
        link.path, params=parse_qs(link.query), data={"List-Unsubscribe": "One-Click"}
    )
    assert clicked.status_code == 200, clicked.text
    assert clicked.json() == {"status": "UNSUBSCRIBED"}
    assert (await stored(api, plain["id"])).status == "UNSUBSCRIBED"
    assert (await stored(api, bare["id"])).status == "ACTIVE"

    after = parse_csv(await api.client.get(EXPORT, params={"q": marker}, headers=api.owner))
    unsubscribed = next(r for r in after if r["id"] == plain["id"])
    assert unsubscribed["status"] == "UNSUBSCRIBED"
    assert TIME.fullmatch(unsubscribed["unsubscribedAt"])


async def test_export_filters_by_status_and_ignores_include_deleted(pg_api: Api) -> None:
    marker = uuid.uuid4().hex
    staying = await create(pg_api, unique_email(marker))
    leaving = await create(pg_api, unique_email(marker))
    gone = await create(pg_api, unique_email(marker))
    await patch(pg_api, leaving["id"], {"status": "UNSUBSCRIBED"})
    await pg_api.client.delete(f"{SUBSCRIBERS}/{gone['id']}", headers=pg_api.owner)
    active = parse_csv(
        await pg_api.client.get(
            EXPORT, params={"q": marker, "status": "ACTIVE"}, headers=pg_api.owner
        )
    )
    assert [r["id"] for r in active] == [staying["id"]]
    everything = parse_csv(
        await pg_api.client.get(
            EXPORT, params={"q": marker, "includeDeleted": "true"}, headers=pg_api.owner
        )
    )
    assert sorted(r["id"] for r in everything) == sorted([staying["id"], leaving["id"]])
    future = parse_csv(
        await pg_api.client.get(
            EXPORT, params={"q": marker, "createdFrom": "2999-01-01"}, headers=pg_api.owner
        )
    )
    assert future == []


async def test_export_defuses_spreadsheet_formulas(pg_api: Api) -> None:
    marker = uuid.uuid4().hex
    names = ['=HYPERLINK("http://evil")', "+1+2", "-3", "@SUM(A1)", "Bình thường"]
    created = {
        (await create(pg_api, unique_email(marker), name=name, source=name))["id"]: name
        for name in names
    }
    rows = parse_csv(await pg_api.client.get(EXPORT, params={"q": marker}, headers=pg_api.owner))
    assert len(rows) == len(names)
    for row in rows:
        name = created[row["id"]]
        expected = name if name == "Bình thường" else "'" + name
        assert row["name"] == expected
        assert row["source"] == expected


async def test_export_is_utf8_with_crlf_rows_and_a_download_name(pg_api: Api) -> None:
    marker = uuid.uuid4().hex
    await create(pg_api, unique_email(marker), name='Đặng "Út", Hà')
    response = await pg_api.client.get(EXPORT, params={"q": marker}, headers=pg_api.owner)
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    text = response.content.decode("utf-8")
    assert text.startswith(",".join(CSV_HEADER) + "\r\n")
    assert parse_csv(response)[0]["name"] == 'Đặng "Út", Hà'
    assert "attachment" in response.headers.get("content-disposition", "")


async def test_export_by_owner_only_on_sqlite_too(sqlite_api: Api) -> None:
    marker = uuid.uuid4().hex
    await create(sqlite_api, unique_email(marker))
    owner = await sqlite_api.client.get(EXPORT, params={"q": marker}, headers=sqlite_api.owner)
    assert len(parse_csv(owner)) == 1
    for role in ("EMPLOYEE", "CASHIER"):
        denied = await sqlite_api.client.get(EXPORT, headers=sqlite_api.auth(role, sub="x"))
        assert_problem(denied, 403, "forbidden")
