"""Which failures are database outages (503 with Retry-After) and which are bugs (500)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import IntegrityError

from outreach.db.outage import is_database_outage


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("starting up"),
        asyncpg.TooManyConnectionsError("too many"),
        asyncpg.AdminShutdownError("terminating"),
        asyncpg.InterfaceError("connection is closed"),
    ],
)
def test_connection_failures_are_outages(exc: BaseException) -> None:
    assert is_database_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug"),
        KeyError("column"),
        AttributeError("no such attribute"),
        FileNotFoundError("/missing"),
        asyncpg.UniqueViolationError("duplicate key"),
        IntegrityError("INSERT", {}, Exception("duplicate key")),
    ],
)
def test_bugs_and_bad_data_are_not_outages(exc: BaseException) -> None:
    assert not is_database_outage(exc)
