"""Runs last: no JSON body the whole suite received contains any subscriber's token."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import make_token, token_secrets
from tests.support import BASE, RECEIVED_BODIES, Api, unique_email


@pytest.mark.last
async def test_no_response_ever_carried_an_unsubscribe_token(pg_api: Api, sqlite_api: Api) -> None:
    for api in (pg_api, sqlite_api):  # at least one subscriber, read back every way
        email = unique_email("leak")
        await api.client.post(f"{BASE}/subscribers/subscribe", json={"email": email})
        listed = await api.client.get(f"{BASE}/subscribers", params={"q": email}, headers=api.owner)
        for item in listed.json()["data"]:
            await api.client.get(f"{BASE}/subscribers/{item['id']}", headers=api.owner)
    tokens: set[str] = set()
    for api in (pg_api, sqlite_api):
        async with api.state.sessionmaker() as session:
            # Tokens are derived, not stored (subscribers/tokens.py): make each one.
            selectors = (await session.scalars(select(Subscriber.unsubscribe_selector))).all()
            tokens |= {make_token(token_secrets(api.settings), s) for s in selectors}
    assert RECEIVED_BODIES, "the suite should have received JSON bodies"
    leaked = [t for t in tokens if any(t in body for body in RECEIVED_BODIES)]
    assert leaked == []
