"""Properties (hypothesis): the inquiry status machine, and keyset pagination under writes."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import BASE, Api

INQUIRIES = f"{BASE}/inquiries"
STATUSES = ["SENT", "IN_PROGRESS", "RESOLVED", "CANCELLED"]
# API.md section 3, written out again on purpose: the model the server is checked against.
ALLOWED = {
    "SENT": {"IN_PROGRESS", "RESOLVED", "CANCELLED"},
    "IN_PROGRESS": {"SENT", "RESOLVED", "CANCELLED"},
    "RESOLVED": {"IN_PROGRESS"},
    "CANCELLED": {"SENT"},
}
PROFILE = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def submit(api: Api, marker: str) -> str:
    response = await api.client.post(
        f"{INQUIRIES}/submit",
        json={
            "name": f"P {marker}",
            "email": f"{uuid.uuid4().hex[:8]}@example.com",
            "message": marker,
        },
    )
    assert response.status_code == 201
    return str(response.json()["id"])


@PROFILE
@given(steps=st.lists(st.sampled_from(STATUSES), min_size=1, max_size=12))
async def test_status_machine_matches_the_table(pg_api: Api, steps: list[str]) -> None:
    inquiry_id = await submit(pg_api, "machine")
    url = f"{INQUIRIES}/{inquiry_id}"
    current = "SENT"
    for target in steps:
        before = (await pg_api.client.get(url, headers=pg_api.owner)).json()
        response = await pg_api.client.patch(url, json={"status": target}, headers=pg_api.owner)
        if target == current:
            assert response.status_code == 200
            assert response.json() == before  # a no-op
        elif target in ALLOWED[current]:
            assert response.status_code == 200
            assert response.json()["status"] == target
            current = target
        else:
            assert response.status_code == 409
            assert response.json()["type"].endswith("/invalid-transition")
            assert (await pg_api.client.get(url, headers=pg_api.owner)).json() == before


Op = tuple[str, int]


@PROFILE
@given(
    initial=st.integers(min_value=0, max_value=12),
    ops=st.lists(
        st.tuples(st.sampled_from(["insert", "delete", "page"]), st.integers(0, 50)),
        max_size=30,
    ),
    limit=st.integers(min_value=1, max_value=4),
    order=st.sampled_from(["desc", "asc"]),
)
async def test_keyset_pages_see_each_row_once(
    api: Api, initial: int, ops: list[Op], limit: int, order: str
) -> None:
    marker = f"page{uuid.uuid4().hex[:12]}"
    live = [await submit(api, marker) for _ in range(initial)]
    throughout = set(live)  # rows live from start to end of the walk
    seen: list[str] = []
    cursor: str | None = None
    done = False

    async def read_page() -> None:
        nonlocal cursor, done
        params: dict[str, str | int] = {"q": marker, "limit": limit, "order": order}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.client.get(INQUIRIES, params=params, headers=api.owner)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["id"] for item in page["data"])
        cursor = page["meta"]["nextCursor"]
        done = cursor is None

    for op, n in ops:
        if done:
            break
        if op == "insert":
            live.append(await submit(api, marker))
        elif op == "delete" and live:
            victim = live.pop(n % len(live))
            throughout.discard(victim)
            deleted = await api.client.delete(f"{INQUIRIES}/{victim}", headers=api.owner)
            assert deleted.status_code == 204
        else:
            await read_page()
    while not done:
        await read_page()
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert throughout <= set(seen), "a row live all along was skipped"
