"""Fixtures of the webhook tests: the app that may call 127.0.0.1, and the connect guard.

Every test here runs under `connect_guard` (tests/support.py): any connection to an address
other than 127.0.0.1 or ::1 fails the test, so the SSRF tests prove that a refused address is
never dialled (nothing here ever leaves the machine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from tests.support import Api, Dialled, Dns, make_settings, start_api
from tests.webhooks.helpers import USED, drop_database, new_database


@pytest.fixture(autouse=True)
def _guarded(connect_guard: Dialled, dns: Dns) -> tuple[Dialled, Dns]:
    """No connection but to loopback, and no DNS lookup but of the stub's names."""
    return connect_guard, dns


# The apps of these tests run no job worker, on databases of their own: a test calls one
# delivery attempt at a time (webhook_service.deliver) and sees exactly what it did, with no
# worker of another app on the same database racing it. The queue's workers deliver in
# test_replicas.py, in real `outreach serve` processes.


@asynccontextmanager
async def _quiet_api(url: str, var_dir: Path, key: ECKey, **settings: Any) -> AsyncIterator[Api]:
    async with start_api(make_settings(url, var_dir, **settings), key) as api:
        await api.state.jobs.stop(1.0)
        yield api


@pytest.fixture(scope="session")
async def webhook_pg_database(var_dir: Path) -> AsyncIterator[str]:
    url = await new_database(var_dir, "postgresql")
    yield url
    await drop_database(url)


@pytest.fixture(scope="session")
async def pg_api(webhook_pg_database: str, var_dir: Path, dev_key: ECKey) -> AsyncIterator[Api]:
    """PostgreSQL, WEBHOOK_ALLOW_PRIVATE=false, no job worker."""
    async with _quiet_api(webhook_pg_database, var_dir, dev_key) as api:
        yield api


@pytest.fixture(scope="session")
async def sqlite_api(var_dir: Path, dev_key: ECKey) -> AsyncIterator[Api]:
    """SQLite, WEBHOOK_ALLOW_PRIVATE=false, no job worker."""
    async with _quiet_api(await new_database(var_dir, "sqlite"), var_dir, dev_key) as api:
        yield api


@pytest.fixture(params=["postgresql", "sqlite"])
def api(request: pytest.FixtureRequest) -> Api:
    result: Api = request.getfixturevalue(
        "pg_api" if request.param == "postgresql" else "sqlite_api"
    )
    return result


@pytest.fixture(scope="session")
async def hook_api(webhook_pg_database: str, var_dir: Path, dev_key: ECKey) -> AsyncIterator[Api]:
    """PostgreSQL with WEBHOOK_ALLOW_PRIVATE=true (receivers on 127.0.0.1, plain http)."""
    async with _quiet_api(webhook_pg_database, var_dir, dev_key, webhook_allow_private=True) as api:
        yield api


@pytest.fixture(autouse=True)
async def _endpoints_removed_after() -> AsyncIterator[None]:
    """Each test's endpoints are deleted after it, so the worker of a later test never sends
    to a receiver (or a name) that test set up."""
    yield
    from sqlalchemy import update

    from outreach.db.base import utcnow
    from outreach.webhooks.models import WebhookEndpoint

    while USED:
        api = USED.pop()
        async with api.state.sessionmaker() as session, session.begin():
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.deleted_at.is_(None))
                .values(deleted_at=utcnow(), active=False)
            )


@pytest.fixture(scope="session")
async def sqlite_hook_api(var_dir: Path, dev_key: ECKey) -> AsyncIterator[Api]:
    """SQLite with WEBHOOK_ALLOW_PRIVATE=true, no job worker."""
    url = await new_database(var_dir, "sqlite")
    async with _quiet_api(url, var_dir, dev_key, webhook_allow_private=True) as api:
        yield api


@pytest.fixture(params=["postgresql", "sqlite"])
def hooked_api(request: pytest.FixtureRequest) -> Api:
    """Either database, WEBHOOK_ALLOW_PRIVATE=true (receivers on 127.0.0.1), no job worker."""
    result: Api = request.getfixturevalue(
        "hook_api" if request.param == "postgresql" else "sqlite_hook_api"
    )
    return result
