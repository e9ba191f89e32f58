"""The jobs the public subscriber routes cause, queued by the change's own statement
(repository.py):

- `mail.subscribe-confirm`, the mail of a double opt-in subscribe, for each request that made
  or kept a PENDING subscriber, sent within the address's limits (at most once per 10
  minutes and 5 times per 24 h, whatever the number of requests: mail/);
- `subscriber.subscribed` / `subscriber.unsubscribed`, the webhook fan-out of a public
  subscribe, confirm or unsubscribe, queued only while an endpoint listens (API.md section
  13): the messages, through State.outbox, with the subscriber as payload (the realtime one).
"""

from __future__ import annotations

from outreach.jobs import MAIL_SCHEDULE, Job, Registry
from outreach.mail import Mail
from outreach.state import State
from outreach.subscribers import repository
from outreach.subscribers.models import SubscriberStatus
from outreach.subscribers.schemas import subscriber_json
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

    async def fan_out(job: Job) -> None:
        """The webhook messages of one public change. Run again (a worker killed after its
        commit), it queues nothing new: the source names this job, one message per endpoint
        and source."""
        subscriber_id = int(job.payload["subscriberId"])
        async with state.sessionmaker() as session, session.begin():
            row = await repository.get(session, subscriber_id, include_deleted=True)
            if row is not None:
                await state.outbox(
                    session,
                    state,
                    job.kind,
                    subscriber_json(row),
                    source=f"{job.kind}:{subscriber_id}:{job.id}:{job.enqueued_at.timestamp():.3f}",
                )

    registry.add(repository.CONFIRM_JOB, confirm_mail, MAIL_SCHEDULE)
    registry.add(repository.SUBSCRIBED_JOB, fan_out, MAIL_SCHEDULE)
    registry.add(repository.UNSUBSCRIBED_JOB, fan_out, MAIL_SCHEDULE)
