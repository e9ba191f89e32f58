"""The trigger-kept 15-minute rollup (PostgreSQL) always equals the rows it summarises."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text, update

from outreach.inquiries.models import Inquiry
from tests.statistics.test_statistics import INQ, add_inquiries
from tests.support import Api

MISMATCHES = text(
    """
    SELECT bucket, status FROM (
        SELECT inquiry_bucket(created_at) AS bucket, status, count(*) AS n
        FROM inquiries WHERE deleted_at IS NULL GROUP BY 1, 2
    ) rows FULL JOIN (
        SELECT bucket, status, sum(n) AS n FROM inquiry_rollup
        GROUP BY 1, 2 HAVING sum(n) <> 0
    ) rollup USING (bucket, status)
    WHERE rows.n IS DISTINCT FROM rollup.n
    """
)


async def test_a_restored_inquiry_is_counted_again(api: Api) -> None:
    moment = datetime(2033, 6, 1, 12, tzinfo=UTC)
    params = {"from": "2033-06-01", "to": "2033-06-01"}
    (inquiry_id,) = await add_inquiries(api, [(moment, "SENT")], deleted=True)
    before = (await api.client.get(INQ, params=params, headers=api.owner)).json()["total"]
    async with api.state.sessionmaker() as session:
        await session.execute(
            update(Inquiry).where(Inquiry.id == inquiry_id).values(deleted_at=None)
        )
        await session.commit()
    after = (await api.client.get(INQ, params=params, headers=api.owner)).json()
    assert after["total"] == before + 1
    assert after["byStatus"]["SENT"] >= 1


@pytest.mark.last
async def test_the_rollup_equals_the_rows(pg_api: Api) -> None:
    """Whatever every other test inserted, changed, deleted or restored so far."""
    async with pg_api.state.sessionmaker() as session:
        mismatches = (await session.execute(MISMATCHES)).all()
    assert mismatches == []
