"""Abuse controls: the optional per-IP limit, and a flood of junk among real submits."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from pathlib import Path

from joserfc.jwk import ECKey
from sqlalchemy import func, select

from outreach.inquiries.models import Inquiry
from tests.support import BASE, REDIS_URL, Api, free_port, make_settings, start_api

SUBMIT = f"{BASE}/inquiries/submit"


def body(marker: str) -> dict[str, str]:
    return {"name": "Hoa", "email": f"{marker}@example.com", "message": f"Hỏi {marker}"}


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def test_in_process_limit_per_client_ip(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    settings = make_settings(
        pg_database, var_dir, rate_limit_public="3/minute", trusted_proxies="203.0.113.0/24"
    )
    async with start_api(settings, dev_key) as api:
        ip = f"198.51.100.{random.randint(1, 254)}"
        answers = [
            await api.client.post(SUBMIT, json=body("limit"), headers=from_ip(ip)) for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        limited = answers[-1]
        assert limited.headers["content-type"] == "application/problem+json"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["type"].endswith("/rate-limited")
        # Another visitor is not held back by the first one's flood, on any public route.
        other = await api.client.post(SUBMIT, json=body("limit"), headers=from_ip("192.0.2.9"))
        assert other.status_code == 201
        subscribe = await api.client.post(
            f"{BASE}/subscribers/subscribe", json={"email": "x@example.com"}, headers=from_ip(ip)
        )
        assert subscribe.status_code == 429
        # Admin routes are not limited.
        assert (await api.client.get(f"{BASE}/inquiries", headers=api.owner)).status_code == 200


async def test_limit_is_shared_through_redis(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    settings = make_settings(
        pg_database,
        var_dir,
        rate_limit_public="4/minute",
        trusted_proxies="203.0.113.0/24",
        redis_url=REDIS_URL,
    )
    ip = f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
    async with start_api(settings, dev_key) as one, start_api(settings, dev_key) as two:
        statuses = []
        for api in (one, two, one, two, one):
            response = await api.client.post(SUBMIT, json=body("shared"), headers=from_ip(ip))
            statuses.append(response.status_code)
    assert statuses == [201, 201, 201, 201, 429]


async def test_limiter_fails_open_when_redis_is_down(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    settings = make_settings(
        pg_database,
        var_dir,
        rate_limit_public="1/minute",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    async with start_api(settings, dev_key) as api:
        statuses = [
            (await api.client.post(SUBMIT, json=body("open"))).status_code for _ in range(3)
        ]
    assert statuses == [201, 201, 201]


async def test_a_flood_of_junk_stores_exactly_the_real_inquiries(pg_api: Api) -> None:
    marker = uuid.uuid4().hex[:12]
    rng = random.Random(20261124)
    junk: list[Callable[[str], dict[str, str]]] = [
        lambda m: {**body(m), "email": "not-an-email"},
        lambda m: {**body(m), "message": ""},
        lambda m: {**body(m), "message": "x" * 5001},
        lambda m: {**body(m), "extra": "field"},
        lambda m: {**body(m), "name": "\x00"},
        lambda m: {"name": m},
    ]
    plan: list[tuple[str, dict[str, str] | bytes]] = []
    for i in range(10_000):
        m = f"{marker}-{i}"
        kind = rng.choice(["valid", "honeypot", "invalid", "malformed"])
        if kind == "valid":
            plan.append((kind, body(m)))
        elif kind == "honeypot":
            plan.append((kind, {**body(m), "website": "http://spam.example"}))
        elif kind == "invalid":
            plan.append((kind, rng.choice(junk)(m)))
        else:
            plan.append((kind, b'{"name": "' + m.encode()))
    gate = asyncio.Semaphore(32)

    async def send(payload: dict[str, str] | bytes) -> int:
        async with gate:
            if isinstance(payload, bytes):
                response = await pg_api.client.post(
                    SUBMIT, content=payload, headers={"Content-Type": "application/json"}
                )
            else:
                response = await pg_api.client.post(SUBMIT, json=payload)
            return response.status_code

    statuses = await asyncio.gather(*(send(p) for _, p in plan))
    expected = {"valid": 201, "honeypot": 201, "invalid": 422, "malformed": 400}
    assert [expected[k] for k, _ in plan] == statuses
    await pg_api.drain_events()
    async with pg_api.state.sessionmaker() as session:
        stored = dict(
            (
                await session.execute(
                    select(Inquiry.status, func.count())
                    .where(Inquiry.email.like(f"{marker}-%"))
                    .group_by(Inquiry.status)
                )
            ).all()
        )
    kinds = [k for k, _ in plan]
    assert stored == {"SENT": kinds.count("valid"), "CANCELLED": kinds.count("honeypot")}
