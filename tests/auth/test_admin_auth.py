"""Authentication and authorization of the admin routes, over HTTP, and the Casbin policy seed."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from casbin_async_sqlalchemy_adapter import Adapter
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy.exc import IntegrityError

from outreach.auth.permissions import SEED_POLICY, Authorizer
from outreach.config import Settings
from outreach.db.base import make_engine
from outreach.models import migrate
from tests.auth.test_jwks import JwksServer, b64json, jwk_public
from tests.support import BASE, PG_ADMIN, Api, make_settings, start_api, unique_email

INQUIRIES = f"{BASE}/inquiries"
STATISTICS = (f"{BASE}/statistics/inquiries", f"{BASE}/statistics/subscribers")


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"].endswith(f"/{slug}"), problem
    assert problem["requestId"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return problem


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def submit(api: Api) -> str:
    body = {"name": "Khách", "email": unique_email("auth"), "message": "Xin chào"}
    response = await api.client.post(f"{INQUIRIES}/submit", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# --------------------------------------------------------------------------- 401


async def test_no_authorization_is_401_with_a_bare_bearer_challenge(pg_api: Api) -> None:
    for path in (INQUIRIES, *STATISTICS, f"{BASE}/subscribers"):
        response = await pg_api.client.get(path)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"  # no error= without a token


async def test_a_non_bearer_scheme_is_401_like_no_token(pg_api: Api) -> None:
    for value in ("Basic b3duZXI6b3duZXI=", "Digest username=owner", "Token abc"):
        response = await pg_api.client.get(INQUIRIES, headers={"Authorization": value})
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer", value


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not.a.jwt",
        "Bearer ",
        "Bearer garbage",
        "Bearer " + "x" * 10_000,
        "Bearer "
        + b64json({"alg": "none"})
        + "."
        + b64json({"sub": "x", "roles": ["OWNER"]})
        + ".",
    ],
    ids=["not-a-jwt", "empty", "garbage", "10kb", "alg-none"],
)
async def test_a_bad_token_is_401_invalid_token(pg_api: Api, authorization: str) -> None:
    response = await pg_api.client.get(INQUIRIES, headers={"Authorization": authorization})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_a_token_signed_by_another_key_is_401(pg_api: Api) -> None:
    other = ECKey.generate_key("P-256", auto_kid=True)
    for header in ({"alg": "ES256", "kid": pg_api.key.kid}, {"alg": "ES256", "kid": other.kid}):
        token = jwt.encode(
            header, {"sub": "x", "exp": int(time.time()) + 60, "roles": ["OWNER"]}, other
        )
        response = await pg_api.client.get(INQUIRIES, headers=bearer(token))
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_an_expired_token_is_401_even_for_the_owner(pg_api: Api) -> None:
    expired = pg_api.token("OWNER", exp=int(time.time()) - 120)
    response = await pg_api.client.get(INQUIRIES, headers=bearer(expired))
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    # within the 30 s leeway it still works
    recent = pg_api.token("OWNER", exp=int(time.time()) - 5)
    accepted = await pg_api.client.get(INQUIRIES, headers=bearer(recent))
    assert accepted.status_code == 200, accepted.text


async def test_a_token_without_sub_is_401(pg_api: Api) -> None:
    key = pg_api.key
    token = jwt.encode(
        {"alg": "ES256", "kid": key.kid}, {"exp": int(time.time()) + 60, "roles": ["OWNER"]}, key
    )
    response = await pg_api.client.get(INQUIRIES, headers=bearer(token))
    assert_problem(response, 401, "unauthorized")


# --------------------------------------------------------------------------- 403 and roles


async def test_a_role_the_policy_does_not_know_is_403(pg_api: Api) -> None:
    guest = bearer(pg_api.token("GUEST", sub="guest-1"))
    response = await pg_api.client.get(INQUIRIES, headers=guest)
    assert_problem(response, 403, "forbidden")
    assert "www-authenticate" not in response.headers
    no_roles = bearer(pg_api.token(sub="nobody"))
    assert_problem(await pg_api.client.get(INQUIRIES, headers=no_roles), 403, "forbidden")


async def test_the_role_may_come_as_a_string_claim(pg_api: Api) -> None:
    token = pg_api.token(sub="owner-by-role", role="OWNER")
    claims = jwt.decode(token, pg_api.key).claims
    assert claims["role"] == "OWNER"
    assert "roles" not in claims  # the role string alone carries the role
    response = await pg_api.client.get(INQUIRIES, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert "data" in response.json()


async def test_any_one_allowed_role_is_enough(pg_api: Api) -> None:
    token = pg_api.token("GUEST", "CASHIER", sub="two-roles")
    assert (await pg_api.client.get(INQUIRIES, headers=bearer(token))).status_code == 200


async def test_cashier_may_read_inquiries_but_not_change_them(pg_api: Api) -> None:
    inquiry_id = await submit(pg_api)
    url = f"{INQUIRIES}/{inquiry_id}"
    cashier = pg_api.auth("CASHIER", sub="cashier-auth")
    assert (await pg_api.client.get(INQUIRIES, headers=cashier)).status_code == 200
    assert (await pg_api.client.get(url, headers=cashier)).status_code == 200
    body = {"status": "IN_PROGRESS", "note": "cashier was here"}
    denied = await pg_api.client.patch(url, json=body, headers=cashier)
    assert_problem(denied, 403, "forbidden")
    unchanged = (await pg_api.client.get(url, headers=cashier)).json()
    assert (unchanged["status"], unchanged["note"]) == ("SENT", None)
    # the same request by an EMPLOYEE goes through: the 403 was the role, not the request
    employee = pg_api.auth("EMPLOYEE", sub="employee-auth")
    allowed = await pg_api.client.patch(url, json=body, headers=employee)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["status"] == "IN_PROGRESS"


async def test_statistics_are_for_employees_and_owners_not_cashiers(pg_api: Api) -> None:
    cashier = pg_api.auth("CASHIER", sub="cashier-stats")
    employee = pg_api.auth("EMPLOYEE", sub="employee-stats")
    owner = pg_api.auth("OWNER", sub="owner-stats")
    for path in STATISTICS:
        assert_problem(await pg_api.client.get(path, headers=cashier), 403, "forbidden")
        for allowed in (employee, owner):
            response = await pg_api.client.get(path, headers=allowed)
            assert response.status_code == 200, response.text


def test_roles_that_may_follow_the_seeded_policy(pg_api: Api) -> None:
    authorizer: Authorizer = pg_api.state.authorizer
    assert authorizer.roles_that_may("inquiries", "read") == ("CASHIER", "EMPLOYEE", "OWNER")
    assert authorizer.roles_that_may("inquiries", "update") == ("EMPLOYEE", "OWNER")
    assert authorizer.roles_that_may("subscribers", "export") == ("OWNER",)
    assert authorizer.roles_that_may("statistics", "read") == ("EMPLOYEE", "OWNER")
    assert authorizer.roles_that_may("subscribers", "purge") == ()


# --------------------------------------------------------------------------- with JWKS_URL


@pytest.fixture
def identity() -> Iterator[tuple[JwksServer, ECKey]]:
    key = ECKey.generate_key("P-256", auto_kid=True)
    server = JwksServer({"keys": [jwk_public(key)]})
    server.start()
    yield server, key
    server.stop()


@pytest.fixture
async def jwks_api(
    pg_database: str, var_dir: Path, dev_key: ECKey, identity: tuple[JwksServer, ECKey]
) -> AsyncIterator[Api]:
    server, _ = identity
    settings = make_settings(
        pg_database,
        var_dir,
        jwks_url=server.url,
        jwt_issuer="https://id.example",
        jwt_audience="outreach",
    )
    async with start_api(settings, dev_key) as api:
        yield api


def identity_token(key: ECKey, **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "staff-9",
        "iss": "https://id.example",
        "aud": "outreach",
        "exp": now + 300,
        "roles": ["EMPLOYEE"],
    }
    claims.update(changes)
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


async def test_with_jwks_url_the_identity_service_keys_are_used(
    jwks_api: Api, identity: tuple[JwksServer, ECKey]
) -> None:
    server, key = identity
    response = await jwks_api.client.get(
        INQUIRIES, headers={**bearer(identity_token(key)), "X-Request-Id": "portal-req.42"}
    )
    assert response.status_code == 200, response.text
    assert server.count == 1
    assert server.hits[0].headers.get("x-request-id") == "portal-req.42"
    # the local development key is not trusted once JWKS_URL is set
    dev = jwks_api.token("OWNER", iss="https://id.example", aud="outreach")
    assert_problem(await jwks_api.client.get(INQUIRIES, headers=bearer(dev)), 401, "unauthorized")
    # issuer and audience are enforced
    for wrong in ({"aud": "someone-else"}, {"iss": "https://evil.example"}):
        token = identity_token(key, **wrong)
        response = await jwks_api.client.get(INQUIRIES, headers=bearer(token))
        assert_problem(response, 401, "unauthorized")
    # the identity service going away does not log anyone out
    server.refuse_connections()
    again = await jwks_api.client.get(INQUIRIES, headers=bearer(identity_token(key)))
    assert again.status_code == 200, again.text


async def test_identity_service_down_with_no_keys_is_503_auth_unavailable(
    jwks_api: Api, identity: tuple[JwksServer, ECKey]
) -> None:
    server, key = identity
    server.mode = "503"
    response = await jwks_api.client.get(INQUIRIES, headers=bearer(identity_token(key)))
    problem = assert_problem(response, 503, "auth-unavailable")
    assert response.headers["retry-after"].isdigit()
    assert "www-authenticate" not in response.headers
    assert server.url not in response.text  # no internal address in the answer
    assert problem["detail"]
    # no token at all is still a plain 401, outage or not
    anonymous = await jwks_api.client.get(INQUIRIES)
    assert_problem(anonymous, 401, "unauthorized")


# --------------------------------------------------------------------------- the policy seed


@pytest.fixture
async def scratch_database() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    name = f"outreach_seed_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def policy_rows(url: str) -> list[tuple[str | None, ...]]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch("SELECT ptype, v0, v1, v2, v3, v4, v5 FROM casbin_rule ORDER BY id")
    finally:
        await conn.close()
    return [tuple(row) for row in rows]


def rule(role: str, resource: str, action: str) -> tuple[str | None, ...]:
    return ("p", role, resource, action, None, None, None)


async def test_the_seed_keeps_operator_rows_and_never_duplicates(scratch_database: str) -> None:
    settings = Settings(database_url=scratch_database, app_env="test")
    assert len(SEED_POLICY) == 24
    assert await migrate(settings) == 24
    seeded = await policy_rows(scratch_database)
    assert sorted(seeded, key=str) == sorted((rule(*r) for r in SEED_POLICY), key=str)

    engine = make_engine(settings, pool=False)
    try:
        adapter = Adapter(engine)  # the real adapter, as the operator's tooling would use it
        await adapter.add_policy("p", "p", ["AUDITOR", "inquiries", "read"])
        assert len(await policy_rows(scratch_database)) == 24 + 1

        assert await migrate(settings) == 0
        rows = await policy_rows(scratch_database)
        assert len(rows) == 24 + 1
        assert len(set(rows)) == len(rows)  # no duplicates
        assert rule("AUDITOR", "inquiries", "read") in rows

        # The unique index turns a repeated add (which the adapter would happily store) into
        # an error.
        with pytest.raises(IntegrityError):
            await adapter.add_policy("p", "p", ["OWNER", "inquiries", "read"])
        assert len(await policy_rows(scratch_database)) == 24 + 1

        # The operator's rule takes effect on the next policy load.
        authorizer = Authorizer(engine)
        await authorizer.load()
        assert authorizer.roles_that_may("inquiries", "read") == (
            "AUDITOR",
            "CASHIER",
            "EMPLOYEE",
            "OWNER",
        )
        assert authorizer.roles_that_may("subscribers", "export") == ("OWNER",)

        # Why the seed never removes anything through the adapter: asked to remove 2 rules,
        # remove_policies deletes every combination of their columns (LIBRARY-NOTES).
        await adapter.remove_policies(
            "p",
            "p",
            [["OWNER", "inquiries", "delete"], ["EMPLOYEE", "subscribers", "create"]],
        )
        assert len(await policy_rows(scratch_database)) == 24 + 1 - 4
        # ...and a migrate run puts the seed back, still keeping the operator's row.
        assert await migrate(settings) == 4
        rows = await policy_rows(scratch_database)
        assert len(rows) == len(set(rows)) == 24 + 1
        assert rule("AUDITOR", "inquiries", "read") in rows
    finally:
        await engine.dispose()
