"""Public subscriber routes: POST /subscribers/subscribe and POST /subscribers/unsubscribe."""

from __future__ import annotations

import asyncio
import re
import secrets
import unicodedata
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import select

from outreach.db.batch import Batcher
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

# ---- helpers ------------------------------------------------------------------------------


async def rows(api: Api, email: str) -> list[Subscriber]:
    """Every row with this email, deleted ones included, oldest first."""
    async with api.state.sessionmaker() as session:
        result = await session.scalars(
            select(Subscriber).where(Subscriber.email == email.lower()).order_by(Subscriber.id)
        )
        return list(result.all())


async def live(api: Api, email: str) -> Subscriber:
    found = [row for row in await rows(api, email) if row.deleted_at is None]
    assert len(found) == 1, found
    return found[0]


async def subscribe(api: Api, email: str, **extra: Any) -> httpx.Response:
    response = await api.client.post(SUBSCRIBE, json={"email": email, **extra})
    assert response.status_code == 202, response.text
    return response


async def subscribed(api: Api, **extra: Any) -> tuple[str, str]:
    """A new ACTIVE subscriber: (email, token)."""
    email = unique_email("sub")
    await subscribe(api, email, **extra)
    return email, token_of(api, await live(api, email))


# ---- subscribe ----------------------------------------------------------------------------


async def test_new_address_is_accepted_and_stored_active(api: Api) -> None:
    email = unique_email("New")
    given = "  " + email.upper().replace("@EXAMPLE.COM", "@Example.com") + " "
    response = await api.client.post(
        SUBSCRIBE, json={"email": given, "name": "  Trần Thị Ánh ", "source": "footer"}
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "ACCEPTED"}
    assert response.headers["content-type"].startswith("application/json")
    row = await live(api, email)
    assert row.email == email.lower()
    assert row.name == "Trần Thị Ánh"
    assert row.source == "footer"
    assert row.status == "ACTIVE"
    assert row.subscribed_at is not None
    assert row.unsubscribed_at is None
    assert row.deleted_at is None


async def test_tokens_are_long_random_and_distinct(pg_api: Api) -> None:
    first_email, first = await subscribed(pg_api)
    _, second = await subscribed(pg_api)
    row = await live(pg_api, first_email)
    # At least 128 bits of URL-safe base64, not derived from the (time-ordered) id.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,128}", first)
    assert first != second
    assert str(row.id) not in first
    assert not first.isdigit()


async def test_subscribing_an_active_address_again_changes_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    email, token = await subscribed(api, name="Original", source="footer")
    before = await live(api, email)
    events = await record_events(api, monkeypatch)
    again = await api.client.post(
        SUBSCRIBE, json={"email": email.upper(), "name": "Changed", "source": "popup"}
    )
    assert again.status_code == 202
    assert again.json() == {"status": "ACCEPTED"}
    await api.drain_events()
    after = await live(api, email)
    assert len(await rows(api, email)) == 1
    assert after.id == before.id
    assert token_of(api, after) == token
    assert after.subscribed_at == before.subscribed_at
    assert after.updated_at == before.updated_at
    assert (after.name, after.source, after.status) == ("Original", "footer", "ACTIVE")
    assert events.about(email.lower()) == []


async def test_unsubscribed_address_comes_back_active_with_a_new_token(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    email, old_token = await subscribed(api, name="Lan")
    left = await api.client.post(UNSUBSCRIBE, json={"token": old_token})
    assert left.status_code == 200
    gone = await live(api, email)
    assert gone.status == "UNSUBSCRIBED"
    assert gone.unsubscribed_at is not None

    events = await record_events(api, monkeypatch)
    back = await api.client.post(SUBSCRIBE, json={"email": email})
    assert back.status_code == 202
    assert back.json() == {"status": "ACCEPTED"}
    await api.drain_events()
    row = await live(api, email)
    assert row.id == gone.id
    assert row.status == "ACTIVE"
    assert row.unsubscribed_at is None
    assert row.subscribed_at >= gone.subscribed_at
    assert row.name == "Lan"  # kept when the form does not send one
    assert token_of(api, row) != old_token
    assert [name for name, _, _ in events.about(email)] == ["subscriber.subscribed"]

    stale = await api.client.post(UNSUBSCRIBE, json={"token": old_token})
    assert_problem(stale, 404, "not-found")
    assert (await live(api, email)).status == "ACTIVE"
    fresh = await api.client.post(UNSUBSCRIBE, json={"token": token_of(api, row)})
    assert fresh.status_code == 200
    assert (await live(api, email)).status == "UNSUBSCRIBED"


async def test_a_deleted_subscriber_does_not_block_the_address(pg_api: Api) -> None:
    email, _ = await subscribed(pg_api)
    old = await live(pg_api, email)
    deleted = await pg_api.client.delete(f"{SUBSCRIBERS}/{old.id}", headers=pg_api.owner)
    assert deleted.status_code == 204
    await subscribe(pg_api, email)
    all_rows = await rows(pg_api, email)
    assert len(all_rows) == 2
    assert all_rows[0].id == old.id
    assert all_rows[0].deleted_at is not None
    assert all_rows[1].status == "ACTIVE"
    assert all_rows[1].deleted_at is None


async def test_concurrent_subscribes_of_one_address_store_one_row(pg_api: Api) -> None:
    email = unique_email("race")
    answers = await asyncio.gather(
        *(pg_api.client.post(SUBSCRIBE, json={"email": email}) for _ in range(6))
    )
    assert [a.status_code for a in answers] == [202] * 6
    assert len(await rows(pg_api, email)) == 1


async def test_a_burst_of_mixed_subscribes_gives_each_address_its_own_outcome(
    pg_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent subscribes are written together (group commit, db/batch.py): new,
    returning, already active and repeated addresses in one burst each end as if alone."""
    active = [await subscribed(pg_api, name=f"Active {i}") for i in range(3)]
    returning = [await subscribed(pg_api, name=f"Back {i}") for i in range(3)]
    for _, token in returning:
        left = await pg_api.client.post(UNSUBSCRIBE, json={"token": token})
        assert left.status_code == 200
    new = [unique_email("burst") for _ in range(30)]
    repeated = unique_email("twice")
    sizes: list[int] = []
    real_write = Batcher._write_on

    async def counting(self: Batcher, conn: Any, batch: list[Any]) -> list[Any]:
        sizes.append(len(batch))
        return await real_write(self, conn, batch)

    monkeypatch.setattr(Batcher, "_write_on", counting)
    events = await record_events(pg_api, monkeypatch)
    emails = new + [e for e, _ in active] + [e for e, _ in returning] + [repeated] * 4
    answers = await asyncio.gather(
        *(pg_api.client.post(SUBSCRIBE, json={"email": e, "source": "burst"}) for e in emails)
    )
    assert [a.status_code for a in answers] == [202] * len(emails)
    await pg_api.drain_events()
    assert max(sizes) > 1  # the burst really was written in groups

    for email in [*new, repeated]:
        row = await live(pg_api, email)
        assert (row.status, row.source) == ("ACTIVE", "burst")
        assert [name for name, _, _ in events.about(email)] == ["subscriber.subscribed"]
    for email, token in active:
        row = await live(pg_api, email)
        assert (row.status, token_of(pg_api, row), row.source) == ("ACTIVE", token, None)
        assert events.about(email) == []
    for email, old_token in returning:
        row = await live(pg_api, email)
        assert row.status == "ACTIVE"
        assert row.unsubscribed_at is None
        assert token_of(pg_api, row) != old_token
        assert [name for name, _, _ in events.about(email)] == ["subscriber.subscribed"]
        assert events.about(email)[0][1]["status"] == "ACTIVE"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@" + "b" * 250 + ".com"}, "email"),
        ({"email": "   "}, "email"),
        ({"email": "nul\x00@example.com"}, "email"),
        ({"email": 42}, "email"),
        ({"name": "x" * 121}, "name"),
        ({"name": "nul \x00 byte"}, "name"),
        ({"name": ["list"]}, "name"),
        ({"source": "s" * 2049}, "source"),
        ({"source": "nul \x00"}, "source"),
        ({"unknown": "field"}, "unknown"),
    ],
)
async def test_invalid_subscribe_bodies_are_422_naming_the_field(
    pg_api: Api, body: dict[str, Any], field: str
) -> None:
    email = unique_email("invalid")
    response = await pg_api.client.post(SUBSCRIBE, json={"email": email, **body})
    assert_problem(response, 422, "validation-failed")
    assert field in fields(response)
    assert await rows(pg_api, email) == []


@pytest.mark.parametrize("empty", [None, "", "   "])
async def test_null_or_blank_name_and_source_are_stored_as_null(
    api: Api, empty: str | None
) -> None:
    email = unique_email("blank")
    response = await api.client.post(
        SUBSCRIBE, json={"email": email, "name": empty, "source": empty}
    )
    assert response.status_code == 202, response.text
    row = await live(api, email)
    assert (row.name, row.source, row.status) == (None, None, "ACTIVE")


async def test_longest_name_and_source_are_accepted(pg_api: Api) -> None:
    email = unique_email("long")
    await subscribe(pg_api, email, name="ắ" * 120, source="s" * 2048)
    row = await live(pg_api, email)
    assert row.name == "ắ" * 120
    assert row.source == "s" * 2048


async def test_missing_email_is_named(pg_api: Api) -> None:
    response = await pg_api.client.post(SUBSCRIBE, json={"name": "No Mail"})
    assert_problem(response, 422)
    assert fields(response) == ["email"]


async def test_subscribe_malformed_json_is_400(pg_api: Api) -> None:
    response = await pg_api.client.post(
        SUBSCRIBE, content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "malformed-request")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_subscribe_wrong_content_type_is_415(pg_api: Api, content_type: str) -> None:
    email = unique_email("ct")
    response = await pg_api.client.post(
        SUBSCRIBE, content=f"email={email}".encode(), headers={"Content-Type": content_type}
    )
    assert_problem(response, 415, "unsupported-media-type")
    assert await rows(pg_api, email) == []


async def test_idempotency_key_replays_the_first_answer_and_does_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = unique_email("idem")
    key = {"Idempotency-Key": f"sub-{email}"}
    first = await api.client.post(SUBSCRIBE, json={"email": email}, headers=key)
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    # Unsubscribe, then replay: a replay must not run the subscribe again.
    token = token_of(api, await live(api, email))
    assert (await api.client.post(UNSUBSCRIBE, json={"token": token})).status_code == 200
    events = await record_events(api, monkeypatch)
    again = await api.client.post(SUBSCRIBE, json={"email": email}, headers=key)
    assert again.status_code == 202
    assert again.json() == first.json() == {"status": "ACCEPTED"}
    assert again.headers["idempotent-replayed"] == "true"
    await api.drain_events()
    row = await live(api, email)
    assert row.status == "UNSUBSCRIBED"
    assert token_of(api, row) == token
    assert events.about(email) == []


async def test_idempotency_key_with_another_body_is_422(api: Api) -> None:
    key = {"Idempotency-Key": "reuse-" + unique_email()}
    first_email, other_email = unique_email("first"), unique_email("other")
    first = await api.client.post(SUBSCRIBE, json={"email": first_email}, headers=key)
    assert first.status_code == 202
    response = await api.client.post(SUBSCRIBE, json={"email": other_email}, headers=key)
    assert_problem(response, 422, "idempotency-key-reused")
    assert await rows(api, other_email) == []


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "ünïcode"])
async def test_bad_idempotency_keys_are_422(pg_api: Api, key: str) -> None:
    email = unique_email("badkey")
    response = await pg_api.client.post(
        SUBSCRIBE, json={"email": email}, headers={b"Idempotency-Key": key.encode("utf-8")}
    )
    assert_problem(response, 422)
    assert "Idempotency-Key" in fields(response)
    assert await rows(pg_api, email) == []


# ---- unsubscribe --------------------------------------------------------------------------


async def test_unsubscribe_with_a_json_token_changes_only_that_subscriber(api: Api) -> None:
    email, token = await subscribed(api)
    bystander_email, _ = await subscribed(api)
    bystander = await live(api, bystander_email)
    response = await api.client.post(UNSUBSCRIBE, json={"token": token})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "UNSUBSCRIBED"}
    assert response.headers["content-type"].startswith("application/json")
    row = await live(api, email)
    assert row.status == "UNSUBSCRIBED"
    assert row.unsubscribed_at is not None
    assert row.updated_at == row.unsubscribed_at
    after = await live(api, bystander_email)
    assert (after.status, after.updated_at, after.unsubscribed_at) == (
        "ACTIVE",
        bystander.updated_at,
        None,
    )

    again = await api.client.post(UNSUBSCRIBE, json={"token": token})
    assert again.status_code == 200
    assert again.json() == {"status": "UNSUBSCRIBED"}
    assert (await live(api, email)).unsubscribed_at == row.unsubscribed_at


async def test_unsubscribe_with_a_form_field(api: Api) -> None:
    email, token = await subscribed(api)
    response = await api.client.post(UNSUBSCRIBE, data={"token": token})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "UNSUBSCRIBED"}
    assert (await live(api, email)).status == "UNSUBSCRIBED"


async def test_unsubscribe_with_the_query_and_no_body(api: Api) -> None:
    email, token = await subscribed(api)
    response = await api.client.post(UNSUBSCRIBE, params={"token": token})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "UNSUBSCRIBED"}
    assert (await live(api, email)).status == "UNSUBSCRIBED"


async def test_rfc8058_one_click_unsubscribe(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    email, token = await subscribed(api)
    events = await record_events(api, monkeypatch)
    response = await api.client.post(
        UNSUBSCRIBE, params={"token": token}, data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "UNSUBSCRIBED"}
    assert (await live(api, email)).status == "UNSUBSCRIBED"
    again = await api.client.post(
        UNSUBSCRIBE, params={"token": token}, data={"List-Unsubscribe": "One-Click"}
    )
    assert again.status_code == 200
    assert again.json() == {"status": "UNSUBSCRIBED"}
    await api.drain_events()
    assert [name for name, _, _ in events.about(email)] == ["subscriber.unsubscribed"]


async def test_rfc8058_one_click_as_multipart_form(pg_api: Api) -> None:
    email, token = await subscribed(pg_api)
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n"
        b"--b0undary--\r\n"
    )
    response = await pg_api.client.post(
        UNSUBSCRIBE,
        params={"token": token},
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 200, response.text
    assert (await live(pg_api, email)).status == "UNSUBSCRIBED"


def _wrong_tokens(token: str) -> list[str]:
    last = "A" if token[-1] != "A" else "B"
    return [
        token[:-1] + last,  # right selector, wrong secret
        secrets.token_urlsafe(32),  # the right shape, unknown
        token[:-43],  # the selector alone
        token + "x",
        "garbage",
        token.upper() if token.upper() != token else token.lower(),
    ]


async def test_unknown_tokens_are_404_and_change_nothing(api: Api) -> None:
    email, token = await subscribed(api)
    before = await live(api, email)
    for wrong in _wrong_tokens(token):
        for send in (
            {"json": {"token": wrong}},
            {"data": {"token": wrong}},
            {"params": {"token": wrong}},
        ):
            response = await api.client.post(UNSUBSCRIBE, **send)  # type: ignore[arg-type]
            assert_problem(response, 404, "not-found")
            assert wrong not in response.text
    after = await live(api, email)
    assert (after.status, after.updated_at) == ("ACTIVE", before.updated_at)


async def test_a_deleted_subscribers_token_is_404(pg_api: Api) -> None:
    email, token = await subscribed(pg_api)
    row = await live(pg_api, email)
    deleted = await pg_api.client.delete(f"{SUBSCRIBERS}/{row.id}", headers=pg_api.owner)
    assert deleted.status_code == 204
    response = await pg_api.client.post(UNSUBSCRIBE, json={"token": token})
    assert_problem(response, 404, "not-found")
    stored = (await rows(pg_api, email))[0]
    assert stored.status == "ACTIVE"
    assert stored.deleted_at is not None


@pytest.mark.parametrize(
    "send",
    [
        {},
        {"json": {}},
        {"json": {"token": ""}},
        {"json": {"token": "   "}},
        {"data": {}},
        {"data": {"token": "  "}},
        {"data": {"List-Unsubscribe": "One-Click"}},
        {"params": {"token": ""}},
    ],
    ids=[
        "nothing",
        "json-empty",
        "json-blank",
        "json-spaces",
        "form-empty",
        "form-blank",
        "one-click-no-token",
        "query-empty",
    ],
)
async def test_no_token_is_422(pg_api: Api, send: dict[str, Any]) -> None:
    response = await pg_api.client.post(UNSUBSCRIBE, **send)
    assert_problem(response, 422)
    assert "token" in fields(response)


async def test_unsubscribe_json_with_unknown_field_is_422(pg_api: Api) -> None:
    _, token = await subscribed(pg_api)
    response = await pg_api.client.post(UNSUBSCRIBE, json={"token": token, "extra": 1})
    assert_problem(response, 422)
    assert "extra" in fields(response)


async def test_unsubscribe_malformed_json_is_400(pg_api: Api) -> None:
    response = await pg_api.client.post(
        UNSUBSCRIBE, content=b'{"token": ', headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, "malformed-request")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
async def test_unsubscribe_wrong_content_type_is_415(pg_api: Api, content_type: str | None) -> None:
    email, token = await subscribed(pg_api)
    response = await pg_api.client.post(
        UNSUBSCRIBE,
        content=f"token={token}".encode(),
        headers={"Content-Type": content_type} if content_type else {},
    )
    assert_problem(response, 415, "unsupported-media-type")
    assert (await live(pg_api, email)).status == "ACTIVE"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"no boundary"),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="token"; filename="t.txt"\r\n\r\n'
            b"x\r\n--zz--\r\n",
        ),
        ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % i for i in range(20))),
    ],
    ids=["no-boundary", "file", "too-many-fields"],
)
async def test_unreadable_unsubscribe_forms_are_400(
    pg_api: Api, content_type: str, body: bytes
) -> None:
    response = await pg_api.client.post(
        UNSUBSCRIBE, content=body, headers={"Content-Type": content_type}
    )
    assert_problem(response, 400, "malformed-request")


async def test_unsubscribe_body_over_64_kib_is_413(pg_api: Api) -> None:
    email, token = await subscribed(pg_api)
    response = await pg_api.client.post(UNSUBSCRIBE, data={"token": token, "padding": "x" * 70_000})
    assert_problem(response, 413, "payload-too-large")
    assert (await live(pg_api, email)).status == "ACTIVE"


async def test_tokens_never_reach_the_logs(pg_api: Api) -> None:
    with structlog.testing.capture_logs() as logs:
        email, token = await subscribed(pg_api)
        await pg_api.client.post(UNSUBSCRIBE, params={"token": token})
        await pg_api.client.post(UNSUBSCRIBE, json={"token": token[:-1] + "!"})
        await pg_api.client.post(SUBSCRIBE, json={"email": email})
        new_token = token_of(pg_api, await live(pg_api, email))
        await pg_api.client.post(UNSUBSCRIBE, data={"token": new_token})
        await pg_api.drain_events()
    text = repr(logs)
    assert token[:16] not in text
    assert new_token[:16] not in text


# ---- realtime -----------------------------------------------------------------------------


async def test_subscribe_and_unsubscribe_emit_events_without_the_token(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = await record_events(api, monkeypatch)
    email = unique_email("events")
    await subscribe(api, email, name="Nguyễn Văn B", source="footer")
    await api.drain_events()
    row = await live(api, email)
    sent = events.about(email)
    assert [name for name, _, _ in sent] == ["subscriber.subscribed"]
    _, payload, rooms = sent[0]
    assert rooms == READER_ROOMS
    assert set(payload) == OUT_FIELDS
    assert payload["id"] == str(row.id)
    assert payload["name"] == "Nguyễn Văn B"
    assert payload["source"] == "footer"
    assert payload["status"] == "ACTIVE"
    assert payload["unsubscribedAt"] is None
    assert payload["deletedAt"] is None
    assert TIME.fullmatch(payload["subscribedAt"])
    assert token_of(api, row) not in repr(payload)
    # The event carries what the staff portal reads from the API.
    shown = await api.client.get(f"{SUBSCRIBERS}/{row.id}", headers=api.owner)
    assert payload == shown.json()

    assert (
        await api.client.post(UNSUBSCRIBE, json={"token": token_of(api, row)})
    ).status_code == 200
    await api.drain_events()
    sent = events.about(email)
    assert [name for name, _, _ in sent] == ["subscriber.subscribed", "subscriber.unsubscribed"]
    _, payload, rooms = sent[1]
    assert rooms == READER_ROOMS
    assert set(payload) == OUT_FIELDS
    assert payload["id"] == str(row.id)
    assert payload["status"] == "UNSUBSCRIBED"
    assert TIME.fullmatch(payload["unsubscribedAt"])
    assert token_of(api, row) not in repr(payload)
    shown = await api.client.get(f"{SUBSCRIBERS}/{row.id}", headers=api.owner)
    assert payload == shown.json()


async def test_vietnamese_text_is_stored_as_given(pg_api: Api) -> None:
    decomposed = unicodedata.normalize("NFD", "Phạm Thị Hường")
    email, _ = await subscribed(pg_api, name=decomposed, source="<b>footer</b>")
    row = await live(pg_api, email)
    assert row.name == decomposed
    assert row.source == "<b>footer</b>"
