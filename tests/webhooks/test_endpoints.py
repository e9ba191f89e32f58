"""Endpoint management (API.md section 13) on PostgreSQL and SQLite: the secret shown once and
sealed at rest, validation and the SSRF refusals at create and update, permissions, rotation,
delete, the test route, the deliveries log and its pages."""

from __future__ import annotations

import base64
import re

import pytest
from sqlalchemy import select, text

from outreach.subscribers.tokens import token_secrets
from outreach.webhooks.models import WebhookMessage
from outreach.webhooks.schemas import DeliveryOut, WebhookOut, WebhookWithSecret
from outreach.webhooks.secrets import SecretUnavailable, unseal
from tests.support import Api, Dns
from tests.webhooks.helpers import (
    PUBLIC_ADDRESS,
    PUBLIC_HOST,
    PUBLIC_URL,
    WEBHOOKS,
    create,
    deliveries,
    message,
    queue_test,
    stored,
)

SECRET = re.compile(r"whsec_([A-Za-z0-9+/]+=*)")
ENDPOINT_FIELDS = {
    "id",
    "url",
    "events",
    "description",
    "active",
    "createdAt",
    "updatedAt",
    "disabledReason",
}


@pytest.fixture(autouse=True)
def _public_name(dns: Dns) -> Dns:
    dns.names[PUBLIC_HOST] = [PUBLIC_ADDRESS]
    dns.names["internal.example.test"] = ["10.20.30.40"]
    dns.names["half.example.test"] = [PUBLIC_ADDRESS, "fd00::1"]
    dns.names["gone.example.test"] = []
    return dns


async def test_create_shows_the_secret_once(api: Api) -> None:
    created = await create(
        api, events=["inquiry.sent", "subscriber.subscribed", "inquiry.sent"], description="CRM"
    )
    assert set(created) == ENDPOINT_FIELDS | {"secret"}
    match = SECRET.fullmatch(created["secret"])
    assert match is not None
    assert len(base64.b64decode(match.group(1))) >= 24
    assert created["events"] == ["inquiry.sent", "subscriber.subscribed"]  # deduplicated
    assert created["active"] is True
    assert created["disabledReason"] is None
    assert created["url"] == PUBLIC_URL
    assert created["description"] == "CRM"

    got = await api.client.get(f"{WEBHOOKS}/{created['id']}", headers=api.owner)
    listed = await api.client.get(WEBHOOKS, params={"limit": 100}, headers=api.owner)
    assert set(got.json()) == ENDPOINT_FIELDS
    assert got.json() == {k: v for k, v in created.items() if k != "secret"}
    assert created["secret"] not in got.text
    assert created["secret"] not in listed.text
    assert got.json() in listed.json()["data"]


async def test_the_secret_is_sealed_at_rest(api: Api) -> None:
    created = await create(api)
    secret = created["secret"]
    row = await stored(api, created["id"])
    # Neither the secret nor its key bytes are in the row: a dump alone cannot sign.
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    assert secret not in row.secret
    assert base64.b64encode(raw).decode() not in row.secret
    async with api.state.engine.connect() as conn:
        dump = " ".join(
            str(v)
            for v in (
                await conn.execute(
                    text("SELECT * FROM webhook_endpoints WHERE id = :id"),
                    {"id": int(created["id"])},
                )
            ).one()
        )
    assert secret.removeprefix("whsec_") not in dump
    # TOKEN_SECRET opens it; another server secret does not; nor on another endpoint's row.
    assert unseal(token_secrets(api.settings), row.id, row.secret) == secret
    with pytest.raises(SecretUnavailable):
        unseal([b"another server secret of enough length!!"], row.id, row.secret)
    with pytest.raises(SecretUnavailable):
        unseal(token_secrets(api.settings), row.id + 1, row.secret)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://hooks.example.test/x", "events": ["inquiry.sent"]}, "url"),
        ({"url": "ftp://hooks.example.test/x", "events": ["inquiry.sent"]}, "url"),
        ({"url": "https://hooks.example.test/" + "a" * 2030, "events": ["inquiry.sent"]}, "url"),
        ({"url": PUBLIC_URL, "events": []}, "events"),
        ({"url": PUBLIC_URL, "events": ["inquiry.deleted"]}, "events.0"),
        ({"url": PUBLIC_URL}, "events"),
        ({"events": ["inquiry.sent"]}, "url"),
        ({"url": PUBLIC_URL, "events": ["inquiry.sent"], "secret": "whsec_x"}, "secret"),
        ({"url": PUBLIC_URL, "events": ["inquiry.sent"], "description": "d" * 501}, "description"),
    ],
)
async def test_invalid_bodies_are_422(api: Api, body: dict[str, object], field: str) -> None:
    response = await api.client.post(WEBHOOKS, json=body, headers=api.owner)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://10.0.0.8/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:192.168.0.1]/hook",
        "https://[fe80::1]/hook",
        "https://224.0.0.1/hook",
        "https://internal.example.test/hook",  # a name that resolves inside
        "https://half.example.test/hook",  # one public address and one private
        "https://gone.example.test/hook",  # no address at all
        "https://user:pass@hooks.example.test/hook",
    ],
)
async def test_non_public_urls_are_refused_at_create(api: Api, url: str) -> None:
    response = await api.client.post(
        WEBHOOKS, json={"url": url, "events": ["inquiry.sent"]}, headers=api.owner
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["url"]


async def test_patch_changes_and_rechecks_the_url(api: Api) -> None:
    created = await create(api, description="first")
    url = f"{WEBHOOKS}/{created['id']}"
    refused = await api.client.patch(
        url, json={"url": "https://internal.example.test/x"}, headers=api.owner
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "url"
    patched = await api.client.patch(
        url,
        json={
            "url": "https://hooks.example.test/v2",
            "events": ["subscriber.unsubscribed"],
            "description": None,
            "active": False,
        },
        headers=api.owner,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["url"] == "https://hooks.example.test/v2"
    assert patched.json()["events"] == ["subscriber.unsubscribed"]
    assert patched.json()["description"] is None
    assert patched.json()["active"] is False
    assert patched.json()["updatedAt"] >= created["updatedAt"]
    assert "secret" not in patched.json()
    for body in ({}, {"active": None}, {"events": None}, {"url": None}, {"secret": "x"}):
        assert (await api.client.patch(url, json=body, headers=api.owner)).status_code == 422


async def test_only_owner_manages_webhooks(api: Api) -> None:
    created = await create(api)
    url = f"{WEBHOOKS}/{created['id']}"
    calls = [
        ("GET", WEBHOOKS, None),
        ("POST", WEBHOOKS, {"url": PUBLIC_URL, "events": ["inquiry.sent"]}),
        ("GET", url, None),
        ("PATCH", url, {"active": False}),
        ("DELETE", url, None),
        ("POST", f"{url}/rotate-secret", None),
        ("POST", f"{url}/test", None),
        ("GET", f"{url}/deliveries", None),
    ]
    for role in ("EMPLOYEE", "CASHIER"):
        for method, path, body in calls:
            response = await api.client.request(method, path, json=body, headers=api.auth(role))
            assert response.status_code == 403, (role, method, path, response.text)
    for method, path, body in calls:
        assert (await api.client.request(method, path, json=body)).status_code == 401
    assert (await api.client.get(url, headers=api.owner)).json()["active"] is True


async def test_unknown_endpoints_are_404(api: Api) -> None:
    for method, path in [
        ("GET", f"{WEBHOOKS}/1"),
        ("PATCH", f"{WEBHOOKS}/1"),
        ("DELETE", f"{WEBHOOKS}/1"),
        ("POST", f"{WEBHOOKS}/1/rotate-secret"),
        ("POST", f"{WEBHOOKS}/1/test"),
        ("GET", f"{WEBHOOKS}/1/deliveries"),
        ("GET", f"{WEBHOOKS}/not-an-id"),
    ]:
        body = {"active": False} if method == "PATCH" else None
        response = await api.client.request(method, path, json=body, headers=api.owner)
        assert response.status_code == 404, (method, path, response.text)


async def test_rotate_answers_a_new_secret(api: Api) -> None:
    created = await create(api)
    rotated = await api.client.post(f"{WEBHOOKS}/{created['id']}/rotate-secret", headers=api.owner)
    assert rotated.status_code == 200, rotated.text
    assert SECRET.fullmatch(rotated.json()["secret"])
    assert rotated.json()["secret"] != created["secret"]
    assert {k: v for k, v in rotated.json().items() if k not in ("secret", "updatedAt")} == {
        k: v for k, v in created.items() if k not in ("secret", "updatedAt")
    }
    row = await stored(api, created["id"])
    keys = token_secrets(api.settings)
    assert unseal(keys, row.id, row.secret) == rotated.json()["secret"]
    assert row.previous_secret is not None
    assert unseal(keys, row.id, row.previous_secret) == created["secret"]


async def test_the_test_route_queues_a_pending_delivery(api: Api) -> None:
    created = await create(api)
    key = await queue_test(api, created["id"])
    assert re.fullmatch(r"msg_[0-9]+", key)
    page = await deliveries(api, created["id"])
    assert page["meta"] == {"limit": 20, "nextCursor": None, "total": 1}
    (pending,) = page["data"]
    assert pending["messageId"] == key
    assert pending["event"] == "webhook.test"
    assert pending["status"] == "pending"
    assert pending["attempt"] == 1
    assert pending["responseStatus"] is None
    assert pending["durationMs"] is None
    assert DeliveryOut.model_validate(pending).model_dump(mode="json", by_alias=True) == pending


async def test_delete_drops_queued_deliveries(api: Api) -> None:
    created = await create(api)
    key = await queue_test(api, created["id"])
    url = f"{WEBHOOKS}/{created['id']}"
    assert (await api.client.delete(url, headers=api.owner)).status_code == 204
    assert (await api.client.get(url, headers=api.owner)).status_code == 404
    assert (await api.client.delete(url, headers=api.owner)).status_code == 404
    listed = await api.client.get(WEBHOOKS, params={"limit": 100}, headers=api.owner)
    assert created["id"] not in [e["id"] for e in listed.json()["data"]]
    dropped = await message(api, key)
    assert dropped.state == "dropped"
    assert dropped.body is None


async def test_delete_drops_a_backlog_larger_than_a_statement_can_bind(pg_api: Api) -> None:
    """A receiver down for hours under load leaves tens of thousands of queued messages:
    deleting its endpoint still answers 204 and drops them all (asyncpg binds at most
    32,767 parameters to a statement)."""
    api = pg_api
    created = await create(api)
    count = 33_000  # ids of their own (negative: no Snowflake is)
    async with api.state.engine.begin() as conn:
        params = {"e": int(created["id"]), "n": count}
        await conn.execute(
            text(
                "INSERT INTO webhook_messages (id, endpoint_id, event, body, state, attempts,"
                " created_at) SELECT -(CAST(:e AS bigint) + g), :e, 'webhook.test', '{}',"
                " 'queued', 0, now() FROM generate_series(1, :n) g"
            ),
            params,
        )
        await conn.execute(
            text(
                "INSERT INTO webhook_deliveries (id, endpoint_id, message_id, event, attempt,"
                " status, at) SELECT id, endpoint_id, id, event, 1, 'pending', now()"
                " FROM webhook_messages WHERE endpoint_id = :e"
            ),
            {"e": params["e"]},
        )
    answer = await api.client.delete(f"{WEBHOOKS}/{created['id']}", headers=api.owner)
    assert answer.status_code == 204, answer.text
    async with api.state.engine.connect() as conn:
        states: dict[str, int] = dict(
            (
                await conn.execute(
                    text(
                        "SELECT state, count(*) FROM webhook_messages WHERE endpoint_id = :e"
                        " GROUP BY state"
                    ),
                    {"e": int(created["id"])},
                )
            ).all()
        )
        attempts: dict[str, int] = dict(
            (
                await conn.execute(
                    text(
                        "SELECT status, count(*) FROM webhook_deliveries WHERE endpoint_id = :e"
                        " GROUP BY status"
                    ),
                    {"e": int(created["id"])},
                )
            ).all()
        )
    assert states == {"dropped": count}
    assert attempts == {"failed": count}


async def test_lists_are_keyset_pages(api: Api) -> None:
    ids = [(await create(api))["id"] for _ in range(3)]
    first = await api.client.get(WEBHOOKS, params={"limit": 2}, headers=api.owner)
    assert first.status_code == 200
    total = first.json()["meta"]["total"]
    assert total >= 3
    assert len(first.json()["data"]) == 2
    assert [e["id"] for e in first.json()["data"]] == ids[::-1][:2]  # newest first
    seen = [e["id"] for e in first.json()["data"]]
    cursor = first.json()["meta"]["nextCursor"]
    while cursor is not None:
        page = await api.client.get(
            WEBHOOKS, params={"limit": 2, "cursor": cursor}, headers=api.owner
        )
        seen += [e["id"] for e in page.json()["data"]]
        cursor = page.json()["meta"]["nextCursor"]
    assert len(seen) == total == len(set(seen))
    oldest = await api.client.get(WEBHOOKS, params={"order": "asc", "limit": 1}, headers=api.owner)
    assert oldest.json()["data"][0]["id"] == min(seen, key=int)
    for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "nope"}, {"order": "up"}):
        response = await api.client.get(WEBHOOKS, params=bad, headers=api.owner)
        assert response.status_code == 422, bad

    endpoint = ids[0]
    keys = [await queue_test(api, endpoint) for _ in range(3)]
    page1 = await deliveries(api, endpoint, limit=2)
    page2 = await deliveries(api, endpoint, limit=2, cursor=page1["meta"]["nextCursor"])
    assert [d["messageId"] for d in page1["data"] + page2["data"]] == keys[::-1]
    assert page1["meta"]["total"] == 3
    assert page2["meta"]["nextCursor"] is None


async def test_serializers_are_the_documented_schemas(api: Api) -> None:
    created = await create(api)
    WebhookWithSecret.model_validate(created)
    got = (await api.client.get(f"{WEBHOOKS}/{created['id']}", headers=api.owner)).json()
    properties = WebhookOut.model_json_schema(by_alias=True)["properties"]
    assert set(got) == set(properties)
    assert WebhookOut.model_validate(got).model_dump(mode="json", by_alias=True) == got


async def test_the_openapi_document_has_every_route(api: Api) -> None:
    doc = (await api.client.get("/v1/api/outreach/doc/openapi.json")).json()
    paths = doc["paths"]
    base = "/v1/api/outreach/webhooks"
    assert set(paths[base]) == {"get", "post"}
    assert set(paths[base + "/{id}"]) == {"get", "patch", "delete"}
    assert "post" in paths[base + "/{id}/rotate-secret"]
    assert "post" in paths[base + "/{id}/test"]
    assert "get" in paths[base + "/{id}/deliveries"]


async def test_nothing_is_sent_on_create_or_change(api: Api) -> None:
    # Creating, changing and rotating queue no message: only events and the test route do.
    created = await create(api)
    url = f"{WEBHOOKS}/{created['id']}"
    await api.client.patch(url, json={"description": "x"}, headers=api.owner)
    await api.client.post(f"{url}/rotate-secret", headers=api.owner)
    async with api.state.sessionmaker() as session:
        queued = (
            await session.scalars(
                select(WebhookMessage).where(WebhookMessage.endpoint_id == int(created["id"]))
            )
        ).all()
    assert queued == []
