"""What the subscriber tests share: routes, the shape of a subscriber, problem checks, events.

The token-leak check that runs around every test here is in tests/subscribers/conftest.py.
"""

from __future__ import annotations

import re

import httpx
import pytest

from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import make_token, token_secrets
from tests.support import BASE, Api, Recorder

SUBSCRIBERS = f"{BASE}/subscribers"
SUBSCRIBE = f"{SUBSCRIBERS}/subscribe"
UNSUBSCRIBE = f"{SUBSCRIBERS}/unsubscribe"
OUT_FIELDS = {
    "id",
    "email",
    "name",
    "source",
    "status",
    "subscribedAt",
    "unsubscribedAt",
    "createdAt",
    "updatedAt",
    "deletedAt",
    "consent",
}
READER_ROOMS = ["role:CASHIER", "role:EMPLOYEE", "role:OWNER"]
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def apis(request: pytest.FixtureRequest) -> list[Api]:
    """The apps a test uses, each once."""
    found: dict[int, Api] = {}
    for name in ("api", "pg_api", "sqlite_api"):
        if name in request.fixturenames:
            value: Api = request.getfixturevalue(name)
            found[id(value)] = value
    return list(found.values())


class Watch:
    """The responses a test received, by the apps it used, each with what its request sent
    (a page behind a mail's link holds the token its URL carried, and nothing else)."""

    def __init__(self, apis: list[Api]) -> None:
        self.apis = apis
        self.bodies: list[str] = []
        self.sent: list[str] = []

    async def keep(self, response: httpx.Response) -> None:
        await response.aread()
        if not response.headers.get("content-type", "").startswith("text/csv"):
            self.bodies.append(response.text)
            request = response.request
            self.sent.append(str(request.url) + request.content.decode(errors="replace"))

    def leaked(self, tokens: set[str]) -> list[str]:
        """Tokens found in a response whose request did not carry them."""
        return [
            token
            for token in tokens
            if any(
                token in body and token not in sent
                for body, sent in zip(self.bodies, self.sent, strict=True)
            )
        ]


async def record_events(api: Api, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    await api.drain_events()  # earlier tests' events go to the real emitter
    recorder = Recorder()
    monkeypatch.setattr(api.state.realtime, "emit", recorder.emit)
    return recorder


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["requestId"] == response.headers["x-request-id"]
    if slug is not None:
        assert problem["type"].endswith(f"/{slug}"), problem


def fields(response: httpx.Response) -> list[str]:
    return [e["field"] for e in response.json().get("errors") or []]


def token_of(api: Api, row: Subscriber) -> str:
    """The subscriber's unsubscribe token, derived as the export derives it (none is stored)."""
    return make_token(token_secrets(api.settings), row.unsubscribe_selector)
