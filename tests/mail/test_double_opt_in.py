"""Double opt-in (API.md section 12) with the real SMTP server, on PostgreSQL and SQLite:
PENDING until the mailed link is confirmed, the confirm token's life, the limits that keep
the service from flooding a stranger, and what PENDING means for the export and statistics.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from outreach.db.base import utcnow
from outreach.mail import address_hash
from outreach.mail.models import MailLog
from outreach.subscribers.models import Subscriber
from tests.mail.support import Received, SmtpServer
from tests.mail.test_mail import idle
from tests.subscribers.helpers import record_events
from tests.support import BASE, RECEIVED_BODIES, Api, unique_email

SUBSCRIBE = f"{BASE}/subscribers/subscribe"
CONFIRM = f"{BASE}/subscribers/confirm"
UNSUBSCRIBE = f"{BASE}/subscribers/unsubscribe"
LINK = re.compile(r"https://shop\.example/v1/api/outreach/subscribers/confirm\?token=([\w-]+)")


@pytest.fixture(autouse=True)
def double(mail_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail_api.settings, "subscribe_confirmation", "double")
    monkeypatch.setattr(mail_api.settings, "inquiry_notify_to", [])
    monkeypatch.setattr(mail_api.settings, "inquiry_ack", False)


async def subscribe(api: Api, email: str, **headers: str) -> None:
    response = await api.client.post(SUBSCRIBE, json={"email": email}, headers=headers or None)
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "ACCEPTED"}


async def row(api: Api, email: str) -> Subscriber:
    async with api.state.sessionmaker() as session:
        found = (
            await session.scalars(
                select(Subscriber).where(
                    Subscriber.email == email.lower(), Subscriber.deleted_at.is_(None)
                )
            )
        ).one()
        return found


def token_in(mail: Received) -> str:
    found = LINK.search(mail.part("plain"))
    assert found, mail.part("plain")
    assert found.group(0) in mail.part("html")
    return found.group(1)


async def confirm(api: Api, token: str) -> Any:
    return await api.client.post(CONFIRM, json={"token": token})


async def test_a_new_address_is_pending_until_its_link_is_confirmed(
    mail_api: Api, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = await record_events(mail_api, monkeypatch)
    email = unique_email("optin")
    await subscribe(mail_api, email, **{"Accept-Language": "en"})
    pending = await row(mail_api, email)
    assert pending.status == "PENDING"
    await mail_api.drain_events()
    assert events.about(email) == []  # no subscriber.subscribed before the confirmation

    (mail,) = await smtp.wait_for(email)
    assert mail.header("Subject") == "Confirm your subscription to Cửa hàng Lan's newsletter"
    token = token_in(mail)
    assert len(token) >= 22 + 43  # a 128-bit selector and its MAC
    assert not any(token in body for body in RECEIVED_BODIES), "a token in a JSON answer"

    # Opening the link (what a mail scanner does) changes nothing.
    page = await mail_api.client.get(CONFIRM, params={"token": token})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert (await row(mail_api, email)).status == "PENDING"

    confirmed = await confirm(mail_api, token)
    assert confirmed.status_code == 200
    assert confirmed.json() == {"status": "ACTIVE"}
    active = await row(mail_api, email)
    assert active.status == "ACTIVE"
    assert active.subscribed_at > pending.subscribed_at  # the confirmation's time
    await mail_api.drain_events()
    assert [name for name, _, _ in events.about(email)] == ["subscriber.subscribed"]
    assert events.about(email)[0][1]["status"] == "ACTIVE"

    again = await confirm(mail_api, token)  # the same link twice: still fine, no event
    assert again.json() == {"status": "ACTIVE"}
    await mail_api.drain_events()
    assert len(events.about(email)) == 1


async def test_a_stranger_gets_at_most_the_limited_confirmation_mails(
    mail_api: Api, smtp: SmtpServer
) -> None:
    stranger = unique_email("stranger")
    for _ in range(10):
        await subscribe(mail_api, stranger)
    await smtp.wait_for(stranger)
    await idle(mail_api)
    assert len(smtp.received(stranger)) == 1, "one mail per 10 minutes, whatever the requests"
    assert (await row(mail_api, stranger)).status == "PENDING"


async def test_subscribing_again_keeps_the_mailed_token_until_it_expires(
    mail_api: Api, smtp: SmtpServer
) -> None:
    email = unique_email("again")
    await subscribe(mail_api, email)
    (first,) = await smtp.wait_for(email)
    token = token_in(first)
    selector = (await row(mail_api, email)).confirm_selector

    # Ten minutes later (the limit's gap), subscribing again mails the same link.
    await age_mail_log(mail_api, "subscribe-confirm", email, minutes=11)
    await subscribe(mail_api, email)
    first_again, second = await smtp.wait_for(email, count=2)
    assert token_in(second) == token
    assert (await row(mail_api, email)).confirm_selector == selector

    # Past 72 h the token is dead; a new subscribe issues a new one.
    await expire_confirm(mail_api, email)
    assert (await confirm(mail_api, token)).status_code == 404
    await age_mail_log(mail_api, "subscribe-confirm", email, minutes=11)
    await subscribe(mail_api, email)
    mails = await smtp.wait_for(email, count=3)
    fresh = token_in(mails[-1])
    assert fresh != token
    assert (await confirm(mail_api, token)).status_code == 404
    assert (await confirm(mail_api, fresh)).json() == {"status": "ACTIVE"}


async def age_mail_log(api: Api, kind: str, email: str, *, minutes: int) -> None:
    async with api.state.sessionmaker() as session:
        rows = await session.scalars(
            select(MailLog).where(MailLog.kind == kind, MailLog.address_hash == address_hash(email))
        )
        for logged in rows.all():
            logged.created_at -= timedelta(minutes=minutes)
        await session.commit()


async def expire_confirm(api: Api, email: str) -> None:
    async with api.state.sessionmaker() as session:
        await session.execute(
            update(Subscriber)
            .where(Subscriber.email == email.lower(), Subscriber.deleted_at.is_(None))
            .values(confirm_expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def test_an_active_address_changes_nothing_and_gets_nothing(
    mail_api: Api, smtp: SmtpServer
) -> None:
    email = unique_email("active")
    await subscribe(mail_api, email)
    (mail,) = await smtp.wait_for(email)
    await confirm(mail_api, token_in(mail))
    before = await row(mail_api, email)
    await age_mail_log(mail_api, "subscribe-confirm", email, minutes=11)
    await subscribe(mail_api, email)
    await idle(mail_api)
    after = await row(mail_api, email)
    assert (after.status, after.updated_at) == ("ACTIVE", before.updated_at)
    assert len(smtp.received(email)) == 1


async def test_a_token_is_used_up_when_its_subscriber_leaves_or_is_deleted(
    mail_api: Api, smtp: SmtpServer
) -> None:
    left, deleted = unique_email("left"), unique_email("deleted")
    await subscribe(mail_api, left)
    await subscribe(mail_api, deleted)
    (left_mail,) = await smtp.wait_for(left)
    (deleted_mail,) = await smtp.wait_for(deleted)
    token = token_in(left_mail)
    assert (await confirm(mail_api, token)).status_code == 200
    active = await row(mail_api, left)
    out = await mail_api.client.patch(
        f"{BASE}/subscribers/{active.id}", json={"status": "UNSUBSCRIBED"}, headers=mail_api.owner
    )
    assert out.status_code == 200
    assert (await confirm(mail_api, token)).status_code == 404

    gone = await row(mail_api, deleted)
    removed = await mail_api.client.delete(f"{BASE}/subscribers/{gone.id}", headers=mail_api.owner)
    assert removed.status_code == 204
    assert (await confirm(mail_api, token_in(deleted_mail))).status_code == 404


async def test_an_unsubscribed_address_comes_back_pending(
    mail_api: Api, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = unique_email("back")
    monkeypatch.setattr(mail_api.settings, "subscribe_confirmation", "single")
    await subscribe(mail_api, email)
    assert (await row(mail_api, email)).status == "ACTIVE"
    gone = await row(mail_api, email)
    await mail_api.client.patch(
        f"{BASE}/subscribers/{gone.id}", json={"status": "UNSUBSCRIBED"}, headers=mail_api.owner
    )
    monkeypatch.setattr(mail_api.settings, "subscribe_confirmation", "double")
    await subscribe(mail_api, email)
    back = await row(mail_api, email)
    assert back.status == "PENDING"
    assert back.id == gone.id
    (mail,) = await smtp.wait_for(email)
    assert (await confirm(mail_api, token_in(mail))).json() == {"status": "ACTIVE"}


async def test_bad_tokens(mail_api: Api) -> None:
    assert (await confirm(mail_api, "x" * 65)).status_code == 404
    assert (await confirm(mail_api, "not a token")).status_code == 404
    missing = await mail_api.client.post(CONFIRM, json={})
    assert missing.status_code == 422
    empty = await mail_api.client.post(CONFIRM)
    assert empty.status_code == 422
    assert [e["field"] for e in empty.json()["errors"]] == ["token"]
    # An unsubscribe token is not a confirm token (another purpose under the same secret).
    email = unique_email("purpose")
    await subscribe(mail_api, email)
    found = await row(mail_api, email)
    from outreach.subscribers.tokens import make_token, token_secrets

    unsubscribe_token = make_token(token_secrets(mail_api.settings), found.unsubscribe_selector)
    assert (await confirm(mail_api, unsubscribe_token)).status_code == 404
    wrong_purpose = make_token(token_secrets(mail_api.settings), found.confirm_selector or "")
    assert (await confirm(mail_api, wrong_purpose)).status_code == 404


async def test_staff_add_active_subscribers_and_cannot_set_pending(
    mail_api: Api, smtp: SmtpServer
) -> None:
    email = unique_email("staff")
    made = await mail_api.client.post(
        f"{BASE}/subscribers", json={"email": email}, headers=mail_api.owner
    )
    assert made.status_code == 201
    assert made.json()["status"] == "ACTIVE"
    refused = await mail_api.client.patch(
        f"{BASE}/subscribers/{made.json()['id']}",
        json={"status": "PENDING"},
        headers=mail_api.owner,
    )
    assert refused.status_code == 422
    await idle(mail_api)
    assert smtp.received(email) == []


async def test_pending_subscribers_are_counted_apart_and_not_exported(
    mail_api: Api, smtp: SmtpServer
) -> None:
    stats = f"{BASE}/statistics/subscribers"
    before = (await mail_api.client.get(stats, headers=mail_api.owner)).json()
    email = unique_email("pendingstat")
    await subscribe(mail_api, email)
    after = (await mail_api.client.get(stats, headers=mail_api.owner)).json()
    assert after["pending"] == before["pending"] + 1
    assert after["active"] == before["active"]
    assert sum(b["subscribed"] for b in after["series"]) == sum(
        b["subscribed"] for b in before["series"]
    )
    export = await mail_api.client.get(f"{BASE}/subscribers/export", headers=mail_api.owner)
    assert export.status_code == 200
    assert email not in export.text
    asked = await mail_api.client.get(
        f"{BASE}/subscribers/export", params={"status": "PENDING"}, headers=mail_api.owner
    )
    assert email not in asked.text
    listed = await mail_api.client.get(
        f"{BASE}/subscribers", params={"status": "PENDING", "q": email}, headers=mail_api.owner
    )
    assert [s["email"] for s in listed.json()["data"]] == [email]
    (mail,) = await smtp.wait_for(email)
    await confirm(mail_api, token_in(mail))
    confirmed = (await mail_api.client.get(stats, headers=mail_api.owner)).json()
    assert confirmed["pending"] == before["pending"]
    assert confirmed["active"] == before["active"] + 1
    exported = await mail_api.client.get(f"{BASE}/subscribers/export", headers=mail_api.owner)
    assert email in exported.text


async def test_the_confirm_mail_is_in_the_subscribers_language(
    mail_api: Api, smtp: SmtpServer
) -> None:
    email = unique_email("vi")
    await subscribe(mail_api, email)  # no Accept-Language: Vietnamese
    (mail,) = await smtp.wait_for(email)
    assert mail.header("Subject") == "Xác nhận đăng ký nhận bản tin của Cửa hàng Lan"
    assert "Liên kết có hiệu lực trong 72 giờ" in mail.part("plain")
    assert '<html lang="vi">' in mail.part("html")


async def test_the_consent_of_a_double_opt_in_is_confirmed_by_the_link(
    mail_api: Api, smtp: SmtpServer
) -> None:
    email = unique_email("consent")
    await subscribe(mail_api, email, **{"User-Agent": "Consent/1.0"})
    pending = await row(mail_api, email)
    owner = mail_api.owner
    url = f"{BASE}/subscribers/{pending.id}"
    (before,) = (await mail_api.client.get(url, headers=owner)).json()["consent"]
    assert (before["method"], before["userAgent"], before["confirmedAt"]) == (
        "double",
        "Consent/1.0",
        None,
    )
    (mail,) = await smtp.wait_for(email)
    assert (await confirm(mail_api, token_in(mail))).status_code == 200
    (after,) = (await mail_api.client.get(url, headers=owner)).json()["consent"]
    assert after["confirmedAt"] is not None
    assert after["confirmedAt"] >= after["at"]
    assert {k: v for k, v in after.items() if k != "confirmedAt"} == {
        k: v for k, v in before.items() if k != "confirmedAt"
    }


async def test_an_erased_pending_subscriber_cannot_be_confirmed(
    mail_api: Api, smtp: SmtpServer
) -> None:
    email = unique_email("erased")
    await subscribe(mail_api, email)
    (mail,) = await smtp.wait_for(email)
    erased = await mail_api.client.post(
        f"{BASE}/privacy/erase", json={"email": email}, headers=mail_api.owner
    )
    assert erased.json() == {"inquiries": 0, "subscribers": 1}
    answer = await confirm(mail_api, token_in(mail))
    assert answer.status_code == 404  # the mailed link died with the person's data
    page = await mail_api.client.get(CONFIRM, params={"token": token_in(mail)})
    assert email not in page.text
