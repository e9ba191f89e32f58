"""ALTCHA proof-of-work on the public POSTs (API.md section 10), solved the way the widget does
(the `altcha` package's solver), against real PostgreSQL, SQLite and Redis."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from altcha import v1 as altcha_v1
from joserfc.jwk import ECKey
from sqlalchemy import func, select

from outreach.inquiries.models import Inquiry
from outreach.subscribers.models import Subscriber
from tests.support import BASE, REDIS_URL, Api, free_port, make_settings, start_api, unique_email

KEY = "test-altcha-hmac-key-" + "k" * 24
CHALLENGE = f"{BASE}/captcha/challenge"
SUBMIT = f"{BASE}/inquiries/submit"
SUBSCRIBE = f"{BASE}/subscribers/subscribe"


def solve(challenge: dict[str, Any]) -> str:
    """What the widget posts: the base64 JSON of the solved challenge."""
    solution = altcha_v1.solve_challenge(
        challenge["challenge"], challenge["salt"], challenge["algorithm"], challenge["maxnumber"]
    )
    assert solution is not None
    payload = {
        "algorithm": challenge["algorithm"],
        "challenge": challenge["challenge"],
        "number": solution.number,
        "salt": challenge["salt"],
        "signature": challenge["signature"],
    }
    return base64.b64encode(json.dumps(payload).encode()).decode()


async def solved(api: Api) -> str:
    answer = await api.client.get(CHALLENGE)
    assert answer.status_code == 200, answer.text
    return solve(answer.json())


def form(**extra: Any) -> dict[str, Any]:
    return {"name": "Human", "email": unique_email("human"), "message": "hello", **extra}


async def inquiries_from(api: Api, email: str) -> int:
    async with api.state.sessionmaker() as session:
        found = await session.scalar(
            select(func.count()).select_from(Inquiry).where(Inquiry.email == email)
        )
        return int(found or 0)


@pytest.fixture(params=["postgresql+redis", "postgresql", "sqlite"])
async def captcha_api(
    request: pytest.FixtureRequest,
    pg_database: str,
    sqlite_database: str,
    var_dir: Path,
    dev_key: ECKey,
) -> AsyncIterator[Api]:
    """CAPTCHA=altcha; spent challenges in Redis, or in the database without it."""
    url = sqlite_database if request.param == "sqlite" else pg_database
    extra: dict[str, Any] = {"captcha": "altcha", "altcha_hmac_key": KEY}
    if request.param.endswith("+redis"):
        extra["redis_url"] = REDIS_URL
    async with start_api(make_settings(url, var_dir, **extra), dev_key) as api:
        yield api


async def test_the_challenge_is_altcha_v1_expiring_in_ten_minutes(captcha_api: Api) -> None:
    answer = await captcha_api.client.get(CHALLENGE)
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    challenge = answer.json()
    assert set(challenge) == {"algorithm", "challenge", "salt", "signature", "maxnumber"}
    assert challenge["algorithm"] == "SHA-256"
    expires = int(parse_qs(challenge["salt"].split("?", 1)[1])["expires"][0])
    assert 9 * 60 <= expires - time.time() <= 10 * 60 + 5
    assert (await captcha_api.client.get(CHALLENGE)).json()["salt"] != challenge["salt"]


async def test_missing_wrong_and_spent_solutions_store_nothing(captcha_api: Api) -> None:
    body = form()
    missing = await captcha_api.client.post(SUBMIT, json=body)
    assert missing.status_code == 422
    assert missing.json()["type"].endswith("/captcha-required")

    good = await solved(captcha_api)
    decoded = json.loads(base64.b64decode(good))
    wrong_number = {**decoded, "number": decoded["number"] + 1}
    forged = altcha_v1.create_challenge(
        altcha_v1.ChallengeOptions(hmac_key="another key", max_number=10, number=3)
    )
    forged_payload = {
        "algorithm": "SHA-256",
        "challenge": forged.challenge,
        "number": 3,
        "salt": forged.salt,
        "signature": forged.signature,
    }
    for bad in (
        "not base64 at all",
        base64.b64encode(b"[" * 3000).decode(),  # deep nesting
        base64.b64encode(json.dumps({"salt": 1}).encode()).decode(),
        base64.b64encode(json.dumps(wrong_number).encode()).decode(),
        base64.b64encode(json.dumps(forged_payload).encode()).decode(),
    ):
        refused = await captcha_api.client.post(SUBMIT, json=body, headers={"X-Altcha": bad})
        assert refused.status_code == 422, refused.text
        assert refused.json()["type"].endswith("/captcha-invalid")

    ok = await captcha_api.client.post(SUBMIT, json=body, headers={"X-Altcha": good})
    assert ok.status_code == 201, ok.text
    spent = await captcha_api.client.post(SUBMIT, json=body, headers={"X-Altcha": good})
    assert spent.status_code == 422
    assert spent.json()["type"].endswith("/captcha-invalid")
    assert await inquiries_from(captcha_api, body["email"]) == 1


async def test_an_expired_challenge_is_refused(captcha_api: Api) -> None:
    old = altcha_v1.create_challenge(
        altcha_v1.ChallengeOptions(
            hmac_key=KEY, max_number=1000, expires=datetime.now(UTC) - timedelta(seconds=1)
        )
    )
    payload = solve(
        {
            "algorithm": old.algorithm,
            "challenge": old.challenge,
            "salt": old.salt,
            "signature": old.signature,
            "maxnumber": old.max_number,
        }
    )
    refused = await captcha_api.client.post(SUBMIT, json=form(), headers={"X-Altcha": payload})
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/captcha-invalid")


async def test_the_body_field_works_for_subscribe_and_unsubscribe_needs_none(
    captcha_api: Api,
) -> None:
    email = unique_email("captcha-sub")
    missing = await captcha_api.client.post(SUBSCRIBE, json={"email": email})
    assert missing.json()["type"].endswith("/captcha-required")
    answer = await captcha_api.client.post(
        SUBSCRIBE, json={"email": email, "altcha": await solved(captcha_api)}
    )
    assert answer.status_code == 202, answer.text
    async with captcha_api.state.sessionmaker() as session:
        assert await session.scalar(select(Subscriber.id).where(Subscriber.email == email))
    unknown = await captcha_api.client.post(
        f"{BASE}/subscribers/unsubscribe", json={"token": "x" * 65}
    )
    assert unknown.status_code == 404  # no captcha asked


async def test_a_retry_with_its_idempotency_key_replays_instead_of_refusing(
    captcha_api: Api,
) -> None:
    body = form()
    payload = await solved(captcha_api)
    first = await captcha_api.client.post(
        SUBMIT, json=body, headers={"X-Altcha": payload, "Idempotency-Key": "k-" + body["email"]}
    )
    retry = await captcha_api.client.post(
        SUBMIT, json=body, headers={"X-Altcha": payload, "Idempotency-Key": "k-" + body["email"]}
    )
    assert first.status_code == retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    other_key = await captcha_api.client.post(
        SUBMIT,
        json=body,
        headers={"X-Altcha": payload, "Idempotency-Key": "other-" + body["email"]},
    )
    assert other_key.json()["type"].endswith("/captcha-invalid")
    assert await inquiries_from(captcha_api, body["email"]) == 1


@pytest.mark.parametrize("store", ["redis", "database", "redis-down"])
async def test_a_solution_is_accepted_once_across_replicas(
    store: str, pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    extra: dict[str, Any] = {"captcha": "altcha", "altcha_hmac_key": KEY}
    if store == "redis":
        extra["redis_url"] = REDIS_URL
    elif store == "redis-down":  # configured, but nothing listens: the database keeps them
        extra["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(
                start_api(make_settings(pg_database, var_dir, **extra), dev_key)
            )
            for _ in range(2)
        ]
        payload = await solved(a)
        body = form()
        assert (
            await a.client.post(SUBMIT, json=body, headers={"X-Altcha": payload})
        ).status_code == 201
        on_b = await b.client.post(SUBMIT, json=body, headers={"X-Altcha": payload})
        assert on_b.status_code == 422
        assert on_b.json()["type"].endswith("/captcha-invalid")
        # A challenge made by one replica is solved for another (one key for all).
        assert (
            await b.client.post(SUBMIT, json=form(), headers={"X-Altcha": await solved(a)})
        ).status_code == 201


async def test_with_captcha_off_the_route_is_404_and_payloads_are_ignored(api: Api) -> None:
    assert (await api.client.get(CHALLENGE)).status_code == 404
    body = form(altcha="anything the widget sent")
    answer = await api.client.post(SUBMIT, json=body, headers={"X-Altcha": str(uuid.uuid4())})
    assert answer.status_code == 201
    sub = await api.client.post(SUBSCRIBE, json={"email": unique_email(), "altcha": "x"})
    assert sub.status_code == 202


async def test_spent_challenges_are_purged_once_their_salt_expired(
    pg_database: str, var_dir: Path, dev_key: ECKey
) -> None:
    from outreach.captcha.models import CaptchaSpent
    from outreach.db.base import utcnow

    settings = make_settings(pg_database, var_dir, captcha="altcha", altcha_hmac_key=KEY)
    async with start_api(settings, dev_key) as api:
        payload = await solved(api)
        assert (
            await api.client.post(SUBMIT, json=form(), headers={"X-Altcha": payload})
        ).status_code == 201
        challenge = json.loads(base64.b64decode(payload))["challenge"]
        async with api.state.sessionmaker() as session:
            row = await session.get(CaptchaSpent, challenge)
            assert row is not None
            assert row.expires_at > utcnow()
            row.expires_at = utcnow() - timedelta(seconds=1)  # its ten minutes are over
            await session.commit()
        await api.state.captcha.purge()
        async with api.state.sessionmaker() as session:
            assert await session.get(CaptchaSpent, challenge) is None
