"""Which exceptions mean "the database is unavailable" (503) rather than a bug (500)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout


def is_database_outage(exc: BaseException) -> bool:
    """Connection-level failures (refused, reset, timed out), as opposed to bad SQL."""
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return False  # a file problem is a bug to see (500 with its trace), not an outage
    if isinstance(exc, PermissionError):
        return False
    if isinstance(exc, OperationalError | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(exc, PoolTimeout):  # every connection busy: overloaded, try again
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (SAInterfaceError, *ASYNCPG_OUTAGES))


# asyncpg's own connection-level failures (the public routes use it without SQLAlchemy).
ASYNCPG_OUTAGES = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)
