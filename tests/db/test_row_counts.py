"""List totals from the trigger-kept counters equal counting the rows (PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import delete, func, select, text

from outreach.inquiries.models import Inquiry
from outreach.subscribers.models import Subscriber
from tests.support import BASE, Api, unique_email


async def counted(api: Api, model: type[Inquiry] | type[Subscriber], **where: object) -> int:
    async with api.state.sessionmaker() as session:
        stmt = select(func.count()).select_from(model)
        if not where.pop("include_deleted", False):
            stmt = stmt.where(model.deleted_at.is_(None))
        if "status" in where:
            stmt = stmt.where(model.status == where["status"])
        return int(await session.scalar(stmt) or 0)


async def totals(api: Api, path: str, **params: str) -> int:
    response = await api.client.get(f"{BASE}/{path}", params=params, headers=api.owner)
    assert response.status_code == 200, response.text
    return int(response.json()["meta"]["total"])


async def test_inquiry_totals_follow_every_kind_of_write(pg_api: Api) -> None:
    async def check() -> None:
        assert await totals(pg_api, "inquiries") == await counted(pg_api, Inquiry)
        assert await totals(pg_api, "inquiries", status="RESOLVED") == await counted(
            pg_api, Inquiry, status="RESOLVED"
        )
        assert await totals(pg_api, "inquiries", includeDeleted="true") == await counted(
            pg_api, Inquiry, include_deleted=True
        )

    await check()
    before = await totals(pg_api, "inquiries")
    created = await pg_api.client.post(
        f"{BASE}/inquiries/submit", json={"name": "A", "email": unique_email(), "message": "m"}
    )
    inquiry = f"{BASE}/inquiries/{created.json()['id']}"
    assert await totals(pg_api, "inquiries") == before + 1
    await pg_api.client.patch(inquiry, json={"status": "RESOLVED"}, headers=pg_api.owner)
    await check()
    await pg_api.client.delete(inquiry, headers=pg_api.owner)
    assert await totals(pg_api, "inquiries") == before
    await check()
    await pg_api.client.post(f"{inquiry}/restore", headers=pg_api.owner)
    assert await totals(pg_api, "inquiries") == before + 1
    await check()


async def test_subscriber_totals_follow_writes(pg_api: Api) -> None:
    before = await totals(pg_api, "subscribers")
    await pg_api.client.post(f"{BASE}/subscribers/subscribe", json={"email": unique_email()})
    assert await totals(pg_api, "subscribers") == before + 1
    assert await totals(pg_api, "subscribers") == await counted(pg_api, Subscriber)
    assert await totals(pg_api, "subscribers", status="ACTIVE") == await counted(
        pg_api, Subscriber, status="ACTIVE"
    )


async def test_totals_follow_bursts_and_many_row_statements(pg_api: Api) -> None:
    """Concurrent submits are one multi-row INSERT (group commit); the counters are kept
    once per statement (migration 0006), for any number of rows inserted or deleted."""
    before = await totals(pg_api, "inquiries")
    marker = unique_email("burst")
    answers = await asyncio.gather(
        *(
            pg_api.client.post(
                f"{BASE}/inquiries/submit",
                json={"name": f"Burst {i}", "email": marker, "message": "m"},
            )
            for i in range(40)
        )
    )
    assert [a.status_code for a in answers] == [201] * 40
    assert await totals(pg_api, "inquiries") == before + 40
    assert await totals(pg_api, "inquiries") == await counted(pg_api, Inquiry)
    async with pg_api.state.sessionmaker() as session:
        await session.execute(delete(Inquiry).where(Inquiry.email == marker))
        await session.commit()
    assert await totals(pg_api, "inquiries") == before
    assert await totals(pg_api, "inquiries") == await counted(pg_api, Inquiry)


@pytest.mark.last
async def test_the_counters_equal_the_rows_after_the_whole_suite(pg_api: Api) -> None:
    async with pg_api.state.sessionmaker() as session:
        mismatches = (
            await session.execute(
                text(
                    """
                    SELECT tbl, status, deleted FROM (
                        SELECT 'inquiries' AS tbl, status, deleted_at IS NOT NULL AS deleted,
                               count(*) AS n FROM inquiries GROUP BY 1, 2, 3
                        UNION ALL
                        SELECT 'subscribers', status, deleted_at IS NOT NULL, count(*)
                        FROM subscribers GROUP BY 1, 2, 3
                    ) rows FULL JOIN (
                        SELECT tbl, status, deleted, sum(n) AS n FROM row_counts
                        GROUP BY 1, 2, 3 HAVING sum(n) <> 0
                    ) counters USING (tbl, status, deleted)
                    WHERE rows.n IS DISTINCT FROM counters.n
                    """
                )
            )
        ).all()
    assert mismatches == []
