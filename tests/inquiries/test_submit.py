"""POST /inquiries/submit: validation, storage, honeypot, client IP, idempotency."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from outreach.inquiries.models import Inquiry
from tests.support import BASE, Api, unique_email

SUBMIT = f"{BASE}/inquiries/submit"


def form(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "  Nguyễn Văn A  ",
        "email": unique_email("Buyer").upper().replace("@EXAMPLE.COM", "@Example.com"),
        "message": "Xin chào, tôi muốn hỏi giá sỉ.",
        "phone": "+84 (90) 123-4567",
        "subject": "Wholesale price",
        "source": "https://shop.example/contact",
    }
    body.update(overrides)
    return body


async def stored(api: Api, inquiry_id: str) -> Inquiry:
    async with api.state.sessionmaker() as session:
        row: Inquiry = (
            await session.scalars(select(Inquiry).where(Inquiry.id == int(inquiry_id)))
        ).one()
        return row


async def test_submit_stores_the_inquiry_and_answers_201(api: Api) -> None:
    body = form()
    response = await api.client.post(SUBMIT, json=body, headers={"User-Agent": "Phone/1.0"})
    assert response.status_code == 201, response.text
    answer = response.json()
    assert set(answer) == {"id", "status", "createdAt"}
    assert answer["status"] == "SENT"
    assert re.fullmatch(r"[0-9]{1,19}", answer["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", answer["createdAt"])
    row = await stored(api, answer["id"])
    assert row.name == "Nguyễn Văn A"  # trimmed, Unicode kept
    assert row.email == str(body["email"]).lower()
    assert row.status == "SENT"
    assert row.client_ip == "203.0.113.7"
    assert row.user_agent == "Phone/1.0"
    assert row.deleted_at is None


async def test_honeypot_looks_the_same_but_is_stored_cancelled(api: Api) -> None:
    response = await api.client.post(SUBMIT, json=form(website="http://spam.example"))
    assert response.status_code == 201
    assert response.json()["status"] == "SENT"
    row = await stored(api, response.json()["id"])
    assert row.status == "CANCELLED"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "   "}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@" + "b" * 250 + ".com"}, "email"),
        ({"message": ""}, "message"),
        ({"message": "m" * 5001}, "message"),
        ({"phone": "call me maybe"}, "phone"),
        ({"phone": "1" * 33}, "phone"),
        ({"subject": "s" * 201}, "subject"),
        ({"source": "u" * 2049}, "source"),
        ({"unknown": "field"}, "unknown"),
        ({"message": "nul \x00 byte"}, "message"),
    ],
)
async def test_invalid_bodies_are_422_with_the_field(
    pg_api: Api, overrides: dict[str, object], field: str
) -> None:
    response = await pg_api.client.post(SUBMIT, json=form(**overrides))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert problem["requestId"] == response.headers["x-request-id"]
    assert field in [e["field"] for e in problem["errors"]]


async def test_missing_fields_are_named(pg_api: Api) -> None:
    response = await pg_api.client.post(SUBMIT, json={})
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"name", "email", "message"}


async def test_malformed_json_is_400(pg_api: Api) -> None:
    response = await pg_api.client.post(
        SUBMIT, content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("/malformed-request")


async def test_wrong_content_type_is_415(pg_api: Api) -> None:
    response = await pg_api.client.post(
        SUBMIT, content=b"name=a", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["type"].endswith("/unsupported-media-type")


async def test_body_over_64_kib_is_413(pg_api: Api) -> None:
    response = await pg_api.client.post(SUBMIT, json=form(message="x" * 70_000))
    assert response.status_code == 413
    assert response.json()["status"] == 413


async def test_chunked_body_over_64_kib_is_413(pg_api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "a", "email": "a@example.com", "message": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    response = await pg_api.client.post(
        SUBMIT, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


async def test_idempotency_key_replays_the_first_answer(api: Api) -> None:
    body = form()
    key = {"Idempotency-Key": f"key-{body['email']}"}
    first = await api.client.post(SUBMIT, json=body, headers=key)
    again = await api.client.post(SUBMIT, json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    async with api.state.sessionmaker() as session:
        count = len(
            (
                await session.scalars(
                    select(Inquiry).where(Inquiry.email == str(body["email"]).lower())
                )
            ).all()
        )
    assert count == 1


async def test_idempotency_key_with_another_body_is_422(api: Api) -> None:
    key = {"Idempotency-Key": "reuse-" + unique_email()}
    assert (await api.client.post(SUBMIT, json=form(), headers=key)).status_code == 201
    response = await api.client.post(SUBMIT, json=form(message="other"), headers=key)
    assert response.status_code == 422
    assert response.json()["type"].endswith("/idempotency-key-reused")


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "ünïcode"])
async def test_bad_idempotency_keys_are_422(pg_api: Api, key: str) -> None:
    response = await pg_api.client.post(
        SUBMIT, json=form(), headers={b"Idempotency-Key": key.encode("utf-8")}
    )
    assert response.status_code == 422
    assert "Idempotency-Key" in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    "overrides",
    [{"subject": None}, {"phone": ""}, {"source": "   "}, {"phone": None, "subject": ""}],
)
async def test_blank_or_null_optional_fields_are_stored_as_null(
    api: Api, overrides: dict[str, object]
) -> None:
    response = await api.client.post(SUBMIT, json=form(**overrides))
    assert response.status_code == 201, response.text
    row = await stored(api, response.json()["id"])
    for field in overrides:
        assert getattr(row, field) is None


@pytest.mark.parametrize("field", ["subject", "source", "phone", "name"])
async def test_nul_in_any_text_field_is_422(pg_api: Api, field: str) -> None:
    response = await pg_api.client.post(SUBMIT, json=form(**{field: "a\x00b"}))
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]
