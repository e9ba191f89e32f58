"""Group commit (db/batch.py) on the real PostgreSQL: a batch behaves like its rows alone."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from outreach.inquiries import repository
from outreach.inquiries.models import Inquiry
from outreach.inquiries.schemas import InquirySubmit
from outreach.inquiries.service import new_row
from tests.support import Api, unique_email


def row(api: Api, email: str, **overrides: Any) -> dict[str, Any]:
    """A submitted inquiry's row, as the service builds it."""
    body = InquirySubmit(name="Batch", email=email, message="m")
    values = new_row(
        api.state.ids.next_id(), body, client_ip="203.0.113.9", user_agent=None, spam=None
    )
    values.update(overrides)
    return values


async def insert(api: Api, values: dict[str, Any]) -> None:
    """As submit does without an Idempotency-Key: an autocommit, group-committed INSERT."""
    await repository.insert_row(api.state.fastdb, api.state.fastdb.dialect, values)


async def stored(api: Api, email: str) -> list[str | None]:
    async with api.state.sessionmaker() as session:
        found = await session.scalars(
            select(Inquiry.client_ip).where(Inquiry.email == email).order_by(Inquiry.id)
        )
        return list(found.all())


async def test_a_value_too_long_fails_its_own_request_in_a_batch_as_alone(pg_api: Api) -> None:
    """The many-row form casts to unbounded arrays: a value over a column's length is
    refused (as by the single-row INSERT), never stored cut short."""
    email = unique_email("batch")
    rows = [row(pg_api, email) for _ in range(5)]
    rows.insert(2, row(pg_api, email, client_ip="x" * 46))
    outcomes = await asyncio.gather(*(insert(pg_api, r) for r in rows), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1
    assert isinstance(failed[0], asyncpg.StringDataRightTruncationError)
    assert outcomes[2] is failed[0]
    assert await stored(pg_api, email) == ["203.0.113.9"] * 5


@pytest.mark.parametrize("size", [1, 40])
async def test_bursts_store_every_row_once(pg_api: Api, size: int) -> None:
    email = unique_email("burst")
    rows = [row(pg_api, email) for _ in range(size)]
    await asyncio.gather(*(insert(pg_api, r) for r in rows))
    async with pg_api.state.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Inquiry).where(Inquiry.email == email)
        )
    assert count == size
