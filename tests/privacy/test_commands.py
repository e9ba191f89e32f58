"""`outreach erase` and `outreach retention` as an operator runs them: real processes on a
database a running app wrote to (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from joserfc.jwk import ECKey
from sqlalchemy import select, update

from outreach.db.base import utcnow
from outreach.inquiries.models import Inquiry, InquiryHistory
from outreach.subscribers.models import Subscriber
from tests.support import BASE, make_settings, migrated_database, start_api
from tests.test_cli import run


@pytest.fixture(params=["postgresql", "sqlite"])
async def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    async with migrated_database(request.param, tmp_path_factory.mktemp("commands")) as url:
        yield url


async def test_erase_and_retention_from_the_command_line(
    database: str, var_dir: Path, dev_key: ECKey, tmp_path: Path
) -> None:
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    settings = make_settings(database, var_dir)
    async with start_api(settings, dev_key) as api:
        body = {"name": "Phạm Văn Cli", "email": email, "message": "xin chào"}
        mine = await api.client.post(f"{BASE}/inquiries/submit", json=body)
        old = await api.client.post(
            f"{BASE}/inquiries/submit", json={**body, "email": "old@example.com"}
        )
        subscribed = await api.client.post(f"{BASE}/subscribers/subscribe", json={"email": email})
        assert (mine.status_code, old.status_code, subscribed.status_code) == (201, 201, 202)
        async with api.state.sessionmaker() as session, session.begin():
            await session.execute(
                update(Inquiry)
                .where(Inquiry.id == int(old.json()["id"]))
                .values(created_at=utcnow() - timedelta(days=10))
            )
    env = {"DATABASE_URL": database, "VAR_DIR": str(tmp_path), "LOG_LEVEL": "warning"}

    # Asked to confirm, and "no" erases nothing.
    refused = run(["erase", "--email", email.upper()], env, input_text="n\n")
    assert refused.returncode == 1, refused.stderr
    assert "Erase every inquiry and subscriber of " + email in refused.stdout
    erased = run(["erase", "--email", email.upper(), "--yes"], env)
    assert erased.returncode == 0, erased.stderr
    assert orjson.loads(erased.stdout) == {"inquiries": 1, "subscribers": 1}
    again = run(["erase", "--email", email, "--yes"], env)
    assert orjson.loads(again.stdout) == {"inquiries": 0, "subscribers": 0}
    bad = run(["erase", "--email", "not an address", "--yes"], env)
    assert bad.returncode == 2
    assert "--email" in bad.stderr

    unset = run(["retention", "--dry-run"], env)
    assert unset.returncode == 2
    assert "INQUIRY_RETENTION_DAYS" in unset.stderr
    env["INQUIRY_RETENTION_DAYS"] = "7"
    dry = run(["retention", "--dry-run"], env)
    assert orjson.loads(dry.stdout) == {"due": 1, "days": 7}, dry.stderr
    real = run(["retention"], env)
    assert orjson.loads(real.stdout) == {"erased": 1, "days": 7}, real.stderr
    assert orjson.loads(run(["retention", "--dry-run"], env).stdout)["due"] == 0

    async with start_api(settings, dev_key) as api, api.state.sessionmaker() as session:
        inquiry = await session.get(Inquiry, int(mine.json()["id"]))
        assert inquiry is not None
        assert (inquiry.name, inquiry.email) == ("[erased]", f"erased-{inquiry.id}@invalid")
        actors = (
            await session.scalars(
                select(InquiryHistory.actor_id).where(
                    InquiryHistory.action == "erased",
                    InquiryHistory.inquiry_id.in_([inquiry.id, int(old.json()["id"])]),
                )
            )
        ).all()
        assert sorted(actors, key=str) == [None, "cli"]  # the job, and the command
        subscriber = (
            await session.scalars(select(Subscriber).where(Subscriber.email.like("erased-%")))
        ).one()
        assert subscriber.status == "UNSUBSCRIBED"
