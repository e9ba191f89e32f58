"""Around every subscriber test: no response may carry an unsubscribe token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select

from outreach.subscribers.models import Subscriber
from tests.subscribers.helpers import Watch, apis


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
    """Every response of the test (CSV exports aside) is checked for every stored token."""
    yield
    tokens: set[str] = set()
    for api in _watch.apis:
        async with api.app.state.sessionmaker() as session:
            tokens |= set((await session.scalars(select(Subscriber.unsubscribe_token))).all())
    leaked = [t for t in tokens if any(t in body for body in _watch.bodies)]
    assert leaked == [], "an unsubscribe token appeared in a response"
