"""The pages behind the mails' links (API.md section 12): GET shows and changes nothing,
the page's button POSTs and is answered with a page, programs keep their JSON; headers that
keep the pages to themselves; Vietnamese by default, English on request."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from outreach.subscribers.models import Subscriber
from outreach.subscribers.tokens import CONFIRM, make_token, token_secrets
from tests.subscribers.helpers import SUBSCRIBE, UNSUBSCRIBE, token_of
from tests.support import BASE, Api, unique_email

CONFIRM_ROUTE = f"{BASE}/subscribers/confirm"
BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Content-Type": "application/x-www-form-urlencoded",
}


async def live(api: Api, email: str) -> Subscriber:
    async with api.state.sessionmaker() as session:
        found: Subscriber = (
            await session.scalars(
                select(Subscriber).where(Subscriber.email == email, Subscriber.deleted_at.is_(None))
            )
        ).one()
        return found


async def active(api: Api) -> tuple[str, str]:
    email = unique_email("page")
    assert (await api.client.post(SUBSCRIBE, json={"email": email})).status_code == 202
    return email, token_of(api, await live(api, email))


async def pending(api: Api, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setattr(api.settings, "subscribe_confirmation", "double")
    email = unique_email("pend")
    assert (await api.client.post(SUBSCRIBE, json={"email": email})).status_code == 202
    row = await live(api, email)
    assert row.status == "PENDING"
    assert row.confirm_selector is not None
    return email, make_token(token_secrets(api.settings), row.confirm_selector, purpose=CONFIRM)


def masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[0]}•••@{domain}"


def assert_page_headers(response: httpx.Response) -> None:
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    assert "default-src 'none'" in csp
    assert "script-src" not in csp  # no script at all (default-src 'none')
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    # The one inline style is allowed by its hash, and nothing else loads.
    style = re.search(r"<style>(.*?)</style>", response.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp
    assert "<script" not in response.text
    assert not re.search(r"(src|href)=\"(https?:)?//", response.text), "nothing from elsewhere"


# ---- unsubscribe ----------------------------------------------------------------------------


async def test_the_unsubscribe_page_names_the_address_and_changes_nothing(api: Api) -> None:
    email, token = await active(api)
    before = await live(api, email)
    page = await api.client.get(UNSUBSCRIBE, params={"token": token})
    assert page.status_code == 200
    assert_page_headers(page)
    assert masked(email) in page.text
    assert email not in page.text  # masked, for whoever else sees the screen
    assert '<html lang="vi">' in page.text  # Vietnamese by default
    assert "Hủy đăng ký" in page.text
    assert '<form method="post" action="unsubscribe">' in page.text
    assert f'<input type="hidden" name="token" value="{token}">' in page.text
    for _ in range(3):  # mail scanners follow links, sometimes more than once
        assert (await api.client.get(UNSUBSCRIBE, params={"token": token})).status_code == 200
    after = await live(api, email)
    assert (after.status, after.updated_at) == ("ACTIVE", before.updated_at)


async def test_pages_speak_english_when_asked(api: Api) -> None:
    _, token = await active(api)
    page = await api.client.get(
        UNSUBSCRIBE, params={"token": token}, headers={"Accept-Language": "en-US,en;q=0.9"}
    )
    assert '<html lang="en">' in page.text
    assert "Unsubscribe" in page.text
    assert "Hủy đăng ký" not in page.text


@pytest.mark.parametrize("params", [{}, {"token": "nope"}, {"token": "x" * 200}])
async def test_a_link_that_does_not_work_is_a_404_page(api: Api, params: dict[str, str]) -> None:
    for route in (UNSUBSCRIBE, CONFIRM_ROUTE):
        page = await api.client.get(route, params=params)
        assert page.status_code == 404
        assert_page_headers(page)
        assert "Liên kết không còn hiệu lực" in page.text
        assert "<form" not in page.text


async def test_the_pages_button_unsubscribes_and_answers_a_page(api: Api) -> None:
    email, token = await active(api)
    done = await api.client.post(UNSUBSCRIBE, data={"token": token}, headers=BROWSER)
    assert done.status_code == 200
    assert_page_headers(done)
    assert "Bạn đã hủy đăng ký" in done.text
    assert masked(email) in done.text
    assert (await live(api, email)).status == "UNSUBSCRIBED"
    # Again (a double click): still a page, still unsubscribed.
    again = await api.client.post(UNSUBSCRIBE, data={"token": token}, headers=BROWSER)
    assert again.status_code == 200
    assert "Bạn đã hủy đăng ký" in again.text


async def test_programs_keep_their_json(api: Api) -> None:
    _, token = await active(api)
    # RFC 8058 one-click from a mail client, even one that says it likes HTML.
    one_click = await api.client.post(
        UNSUBSCRIBE,
        params={"token": token},
        data={"List-Unsubscribe": "One-Click"},
        headers=BROWSER,
    )
    assert one_click.status_code == 200
    assert one_click.json() == {"status": "UNSUBSCRIBED"}
    _, other = await active(api)
    for accept in ("application/json", "*/*", ""):
        form = await api.client.post(UNSUBSCRIBE, data={"token": other}, headers={"Accept": accept})
        assert form.headers["content-type"] == "application/json", accept
    json_body = await api.client.post(
        UNSUBSCRIBE, json={"token": other}, headers={"Accept": BROWSER["Accept"]}
    )
    assert json_body.json() == {"status": "UNSUBSCRIBED"}


async def test_a_dead_link_posted_from_the_page_is_a_404_page(api: Api) -> None:
    refused = await api.client.post(UNSUBSCRIBE, data={"token": "stale"}, headers=BROWSER)
    assert refused.status_code == 404
    assert_page_headers(refused)
    assert "Liên kết không còn hiệu lực" in refused.text
    missing = await api.client.post(UNSUBSCRIBE, data={"other": "x"}, headers=BROWSER)
    assert missing.status_code == 422
    assert missing.headers["content-type"].startswith("text/html")
    as_json = await api.client.post(
        UNSUBSCRIBE, json={"token": "stale"}, headers={"Accept": BROWSER["Accept"]}
    )
    assert as_json.status_code == 404
    assert as_json.headers["content-type"] == "application/problem+json"


async def test_the_business_name_is_text_never_markup(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.settings, "business_name", "Trà <b>Lan</b> & Co")
    _, token = await active(api)
    page = await api.client.get(UNSUBSCRIBE, params={"token": token})
    assert "Trà &lt;b&gt;Lan&lt;/b&gt; &amp; Co" in page.text
    assert "<b>Lan</b>" not in page.text


# ---- confirm ---------------------------------------------------------------------------------


async def test_the_confirm_page_asks_and_its_button_confirms(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    email, token = await pending(api, monkeypatch)
    page = await api.client.get(CONFIRM_ROUTE, params={"token": token})
    assert page.status_code == 200
    assert_page_headers(page)
    assert masked(email) in page.text
    assert '<form method="post" action="confirm">' in page.text
    assert (await live(api, email)).status == "PENDING"  # GET changes nothing

    done = await api.client.post(CONFIRM_ROUTE, data={"token": token}, headers=BROWSER)
    assert done.status_code == 200
    assert_page_headers(done)
    assert "Đăng ký đã được xác nhận" in done.text
    assert (await live(api, email)).status == "ACTIVE"


async def test_confirm_answers_json_to_programs(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    email, token = await pending(api, monkeypatch)
    by_query = await api.client.post(CONFIRM_ROUTE, params={"token": token})
    assert by_query.json() == {"status": "ACTIVE"}
    by_form = await api.client.post(CONFIRM_ROUTE, data={"token": token})
    assert by_form.json() == {"status": "ACTIVE"}
    assert (await live(api, email)).status == "ACTIVE"


async def test_pages_are_in_the_openapi_document_as_html(api: Api) -> None:
    document: dict[str, Any] = (await api.client.get(f"{BASE}/doc/openapi.json")).json()
    for route in ("/subscribers/unsubscribe", "/subscribers/confirm"):
        get = document["paths"][BASE + route]["get"]
        assert "text/html" in get["responses"]["200"]["content"]
        assert "text/html" in get["responses"]["404"]["content"]
        assert "post" in document["paths"][BASE + route]
