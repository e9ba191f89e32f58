"""Around every subscriber test: no response may carry an unsubscribe token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy import select

from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import CONFIRM, make_token, token_secrets
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
    unsubscribe and confirm token, derived from its selectors (tokens are not stored): none
    may appear unless its own request carried it (the page of a mail's link)."""
    yield
    tokens: set[str] = set()
    for api in _watch.apis:
        secrets = token_secrets(api.settings)
        async with api.state.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Subscriber.unsubscribe_selector, Subscriber.confirm_selector)
                )
            ).all()
        for unsubscribe, confirm in rows:
            tokens.add(make_token(secrets, unsubscribe))
            if confirm:
                tokens.add(make_token(secrets, confirm, purpose=CONFIRM))
    assert _watch.leaked(tokens) == [], "a token appeared in a response"


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
