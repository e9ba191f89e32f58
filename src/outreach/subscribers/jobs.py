"""The mail a double opt-in subscribe causes: `mail.subscribe-confirm`, queued by the
subscribe's own statement for each request that made or kept a PENDING subscriber
(repository.py), sent within the address's limits (at most once per 10 minutes and 5 times
per 24 h, whatever the number of requests: mail/)."""

from __future__ import annotations

from outreach.jobs import MAIL_SCHEDULE, Job, Registry
from outreach.mail import Mail
from outreach.state import State
from outreach.subscribers import repository
from outreach.subscribers.models import SubscriberStatus
from outreach.subscribers.tokens import CONFIRM, make_token, token_secrets
from outreach.templates import Language, message, render


def confirm_url(state: State, selector: str) -> str:
    """PUBLIC_BASE_URL + base + /subscribers/confirm?token=T (API.md section 12)."""
    token = make_token(token_secrets(state.settings), selector, purpose=CONFIRM)
    return (
        f"{state.settings.public_url}{state.settings.base_path}/subscribers/confirm?token={token}"
    )


def register(registry: Registry, state: State) -> None:
    async def confirm_mail(job: Job) -> None:
        row = await repository.get_live(state.fastdb, int(job.payload["subscriberId"]))
        # Confirmed, left or deleted since: nothing to ask any more.
        if row is None or row["status"] != SubscriberStatus.PENDING or not row["confirm_selector"]:
            return
        language: Language = "en" if row["language"] == "en" else "vi"
        business = state.settings.business
        subject = message(language, "confirm_subject", business=business)
        context = {
            "business": business,
            "title": subject,
            "email": row["email"],
            "link": confirm_url(state, row["confirm_selector"]),
        }
        await state.mailer.send(
            Mail(
                kind="subscribe-confirm",
                # One per subscribe request (its job), the same on every retry.
                key=f"subscribe-confirm:{row['id']}:{job.id}:{job.enqueued_at.timestamp():.3f}",
                to=row["email"],
                subject=subject,
                text=render("mail_subscribe_confirm.txt", language, **context),
                html=render("mail_subscribe_confirm.html", language, **context),
                limited=True,
            )
        )

    registry.add(repository.CONFIRM_JOB, confirm_mail, MAIL_SCHEDULE)
