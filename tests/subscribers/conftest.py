"""Around every subscriber test: no response may carry an unsubscribe token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy import select

from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import make_token, token_secrets
from tests.subscribers.helpers import Watch, apis
from tests.support import PG_ADMIN


@pytest.fixture
def _watch(request: pytest.FixtureRequest) -> Iterator[Watch]:
    # Synchronous: fixtures are resolved here, outside the running event loop.
    watch = Watch(apis(request))
    for api in watch.apis:
        api.client.event_hooks["response"].append(watch.keep)
    yield watch
    for api in watch.apis:
        api.client.event_hooks["response"].remove(watch.keep)


@pytest.fixture(autouse=True)
async def no_response_carries_a_token(_watch: Watch) -> AsyncIterator[None]:
    """Every response of the test (CSV exports aside) is checked for every subscriber's
    token, derived from its selector (tokens are not stored)."""
    yield
    tokens: set[str] = set()
    for api in _watch.apis:
        async with api.state.sessionmaker() as session:
            selectors = (await session.scalars(select(Subscriber.unsubscribe_selector))).all()
            tokens |= {make_token(token_secrets(api.settings), s) for s in selectors}
    leaked = [t for t in tokens if any(t in body for body in _watch.bodies)]
    assert leaked == [], "an unsubscribe token appeared in a response"


@pytest.fixture
async def fresh_pg() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (for migrations and for a server of its own)."""
    name = f"outreach_sub_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
