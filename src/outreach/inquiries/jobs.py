"""The jobs a stored inquiry causes: one `inquiry.sent` job per SENT inquiry (queued by the
submit's own statement, repository.py), which fans out one mail job per address:
`mail.inquiry-notify` to each of INQUIRY_NOTIFY_TO, `mail.inquiry-ack` to the visitor with
INQUIRY_ACK. Each mail job is retried and limited on its own (mail/). Webhooks (API.md
section 13) hook into the same fan-out.
"""

from __future__ import annotations

from typing import Any

from outreach.config import Settings
from outreach.inquiries import repository
from outreach.inquiries.models import InquiryStatus
from outreach.inquiries.schemas import inquiry_json
from outreach.jobs import LEAF, MAIL_SCHEDULE, Job, Registry, enqueue
from outreach.mail import Mail, address_hash, visitor_address
from outreach.state import State
from outreach.templates import Language, message, render

NOTIFY = "mail.inquiry-notify"
ACK = "mail.inquiry-ack"


def wants_sent_job(settings: Settings) -> bool:
    """Whether a SENT inquiry always has something to do after its commit (mail); without,
    its job is queued only while a webhook listens (repository.INSERT_GROUPED)."""
    return bool(settings.inquiry_notify_to or settings.inquiry_ack)


def _language(value: Any) -> Language:
    return "en" if value == "en" else "vi"


def _mailable(inquiry: Any) -> bool:
    """Gone, or marked spam (CANCELLED) before its mail went out: no mail."""
    return inquiry is not None and inquiry["status"] != InquiryStatus.CANCELLED.value


def register(registry: Registry, state: State) -> None:
    async def sent(job: Job) -> None:
        """Fan out one inquiry (`inquiryId`) or a burst's (`inquiryIds`, the grouped INSERT's
        one job when only webhooks listen): a job per mail, in one transaction (run twice
        after a crash, the mails' keys keep each from being sent twice), then the webhook
        messages of them all, in one transaction."""
        settings = state.settings
        ids = [str(i) for i in job.payload.get("inquiryIds") or [job.payload["inquiryId"]]]
        if wants_sent_job(settings):  # else queued for the webhooks alone: no empty commit
            async with state.fastdb.transaction() as conn:
                for inquiry_id in ids:
                    for address in settings.inquiry_notify_to:
                        await enqueue(
                            conn, NOTIFY, {"inquiryId": inquiry_id, "to": address}, priority=LEAF
                        )
                    if settings.inquiry_ack:
                        lang = {"lang": job.payload["lang"]} if "lang" in job.payload else {}
                        await enqueue(conn, ACK, {"inquiryId": inquiry_id, **lang}, priority=LEAF)
        # The webhooks listening (State.outbox): the event, with the inquiry as its
        # payload (the realtime one). Run twice after a crash, it queues nothing new: one
        # message per endpoint and source, so one webhook-id per event.
        async with state.sessionmaker() as session, session.begin():
            # A Core read (the payload needs the columns, not ORM objects).
            found = await session.execute(repository.GET_MANY, {"p_ids": [int(i) for i in ids]})
            for row in found.mappings().all():
                await state.outbox(
                    session,
                    state,
                    repository.SENT_JOB,
                    inquiry_json(row),
                    source=f"{repository.SENT_JOB}:{row['id']}",
                )

    async def notify(job: Job) -> None:
        inquiry = await repository.find(state.fastdb, int(job.payload["inquiryId"]))
        if not _mailable(inquiry):
            return
        assert inquiry is not None
        to = str(job.payload["to"])
        language = state.settings.staff_language
        business = state.settings.business
        subject = message(language, "notify_subject", business=business, name=inquiry["name"])
        if inquiry["subject"]:
            subject += f": {inquiry['subject']}"
        context = {"inquiry": inquiry, "business": business, "title": subject}
        await state.mailer.send(
            Mail(
                kind="inquiry-notify",
                key=f"inquiry-notify:{inquiry['id']}:{address_hash(to)[:16]}",
                to=to,
                subject=subject,
                text=render("mail_inquiry_notify.txt", language, **context),
                html=render("mail_inquiry_notify.html", language, **context),
                reply_to=visitor_address(inquiry["name"], inquiry["email"]),
            )
        )

    async def ack(job: Job) -> None:
        inquiry = await repository.find(state.fastdb, int(job.payload["inquiryId"]))
        if not _mailable(inquiry):
            return
        assert inquiry is not None
        language = _language(job.payload.get("lang"))
        business = state.settings.business
        subject = message(language, "ack_subject", business=business)
        context = {"inquiry": inquiry, "business": business, "title": subject}
        await state.mailer.send(
            Mail(
                kind="inquiry-ack",
                key=f"inquiry-ack:{inquiry['id']}",
                to=inquiry["email"],
                subject=subject,
                text=render("mail_inquiry_ack.txt", language, **context),
                html=render("mail_inquiry_ack.html", language, **context),
                limited=True,  # an address anyone can type: at most 1 per 10 min, 5 per day
            )
        )

    registry.add(repository.SENT_JOB, sent, MAIL_SCHEDULE)
    registry.add(NOTIFY, notify, MAIL_SCHEDULE)
    registry.add(ACK, ack, MAIL_SCHEDULE)
