"""Fixtures of the webhook tests: the app that may call 127.0.0.1, and the connect guard.

Every test here runs under `connect_guard` (tests/support.py): any connection to an address
other than 127.0.0.1 or ::1 fails the test, so the SSRF tests prove that a refused address is
never dialled (nothing here ever leaves the machine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from tests.support import Api, Dialled, make_settings, start_api
from tests.webhooks.helpers import USED


@pytest.fixture(autouse=True)
def _guarded(connect_guard: Dialled) -> Dialled:
    return connect_guard


@pytest.fixture(scope="session")
async def hook_api(pg_database: str, var_dir: Path, dev_key: ECKey) -> AsyncIterator[Api]:
    """The app with WEBHOOK_ALLOW_PRIVATE=true (receivers on 127.0.0.1, plain http)."""
    settings = make_settings(pg_database, var_dir, webhook_allow_private=True)
    async with start_api(settings, dev_key) as api:
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
